"""Bounded resources and failure isolation, over real HTTP against the seed's slow EIServer engine
(about 10 s per request, so requests are reliably in flight while the test acts)."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from bench.processes import running_service

pytestmark = pytest.mark.slow


def wait_until(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_queue_bound_and_timeout_answer_503_and_504_and_liveness_stays_up(azurite, seed_session, tmp_path) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "SCORING_ENGINE": "eiserver", "WORKER_COUNT": "1",
           "MAX_CONCURRENT": "1", "MAX_QUEUE": "1", "SCORING_TIMEOUT_MS": "3000"}
    body = seed_session.request_body(np.linspace(0, 1, 784))
    with running_service(env, tmp_path / "limits.log") as service:
        def post() -> httpx.Response:
            return httpx.post(f"{service.url}/score", content=body, timeout=60,
                              headers={"Content-Type": "application/json"})

        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post)
            time.sleep(0.5)
            second = pool.submit(post)
            time.sleep(0.5)
            third = pool.submit(post)
            assert httpx.get(f"{service.url}/", timeout=5).text == "Healthy"
            responses = [first.result(), second.result(), third.result()]
        assert [r.status_code for r in responses] == [504, 504, 503], [r.text for r in responses]
        assert "within 3000 ms" in responses[0].json()["message"]
        assert "busy" in responses[2].json()["message"] and responses[2].headers["retry-after"]
        # The timed-out scoring keeps its worker until it ends (~10 s), then frees its slot: two new
        # requests are then one running and one queued (both time out), not one refused as busy.
        time.sleep(15)
        with ThreadPoolExecutor(2) as pool:
            later = [pool.submit(post), pool.submit(post)]
            assert [future.result().status_code for future in later] == [504, 504]
        assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 200


def test_a_worker_that_dies_fails_only_its_request_and_is_replaced(eiserver_service, seed_session) -> None:
    """Two requests run on the two workers; one worker is killed: its request gets a 503, the other
    request is answered, a new worker takes the dead one's place and scores again."""
    body = seed_session.request_body(np.linspace(0, 1, 784))

    def post() -> httpx.Response:
        return httpx.post(f"{eiserver_service.url}/score", content=body, timeout=120,
                          headers={"Content-Type": "application/json"})

    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(post), pool.submit(post)]
        workers = eiserver_service.worker_pids()
        assert len(workers) == 2
        time.sleep(2)  # both requests are being scored (EIServer takes ~10 s each)
        os.kill(workers[0], signal.SIGKILL)
        responses = [future.result() for future in pending]
    assert sorted(response.status_code for response in responses) == [200, 503]
    failed = next(response for response in responses if response.status_code == 503)
    assert "worker stopped" in failed.json()["message"] and failed.headers["retry-after"]
    answered = next(response for response in responses if response.status_code == 200)
    assert len(seed_session.encryptor.decrypt(answered.json())) == 10
    wait_until(lambda: len(eiserver_service.worker_pids()) == 2)
    assert workers[0] not in eiserver_service.worker_pids()
    assert httpx.get(f"{eiserver_service.url}/ready").status_code == 200
    for response in [post(), post()]:  # both workers, the new one included, score again
        assert response.status_code == 200, response.text


def test_graceful_shutdown_finishes_the_requests_in_flight(azurite, seed_session, tmp_path) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "SCORING_ENGINE": "eiserver", "WORKER_COUNT": "1"}
    body = seed_session.request_body(np.linspace(0, 1, 784))
    with running_service(env, tmp_path / "shutdown.log") as service:
        result: dict[str, httpx.Response] = {}
        sender = threading.Thread(target=lambda: result.update(response=httpx.post(
            f"{service.url}/score", content=body, timeout=120, headers={"Content-Type": "application/json"})))
        sender.start()
        time.sleep(2)
        service.process.send_signal(signal.SIGTERM)
        sender.join(120)
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's.
        assert service.process.wait(60) in (0, -signal.SIGTERM)
    assert result["response"].status_code == 200, result["response"].text
    assert len(seed_session.encryptor.decrypt(result["response"].json())) == 10
