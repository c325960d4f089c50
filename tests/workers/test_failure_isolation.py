"""Bounded resources and failure isolation, over real HTTP against the tutorial's slow EIServer engine
(seconds per request, so requests stay in flight while the test acts). The tests wait for the state
they need, read from the service's own gauges, never for an assumed scoring time."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from bench.processes import GENEROUS_SCORING_TIMEOUT_MS, ServiceProcess, running_service, wait_until

pytestmark = pytest.mark.slow


# Generous bounds for states that arrive within milliseconds to tens of seconds on a slow machine.
STATE_TIMEOUT_S = 300


def wait_for_gauge(service: ServiceProcess, name: str, value: float) -> None:
    wait_until(lambda: service.metric(name) == value, STATE_TIMEOUT_S, f"{name} == {value}")


def test_queue_bound_and_timeout_answer_503_and_504_and_liveness_stays_up(azurite, azureml_session, tmp_path) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "SCORING_ENGINE": "eiserver", "WORKER_COUNT": "1",
           "MAX_CONCURRENT": "1", "MAX_QUEUE": "1", "SCORING_TIMEOUT_MS": "3000"}
    body = azureml_session.request_body(np.linspace(0, 1, 784))
    with running_service(env, tmp_path / "limits.log") as service:
        def post() -> httpx.Response:
            return service.http.post("/score", content=body, timeout=60,
                              headers={"Content-Type": "application/json"})

        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post)
            wait_for_gauge(service, "scoring_in_flight", 1)
            second = pool.submit(post)
            wait_for_gauge(service, "scoring_queue_depth", 1)
            third = pool.submit(post)
            assert httpx.get(f"{service.url}/", timeout=5).text == "Healthy"
            responses = [first.result(), second.result(), third.result()]
        assert [r.status_code for r in responses] == [504, 504, 503], [r.text for r in responses]
        assert "within 3000 ms" in responses[0].json()["message"]
        assert "busy" in responses[2].json()["message"] and responses[2].headers["retry-after"]
        # The timed-out scoring keeps its worker until it ends, then frees its slot: two new requests
        # are then one running and one queued (both time out), not one refused as busy.
        wait_for_gauge(service, "scoring_in_flight", 0)
        with ThreadPoolExecutor(2) as pool:
            later = [pool.submit(post), pool.submit(post)]
            assert [future.result().status_code for future in later] == [504, 504]
        assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 200


def test_a_worker_that_dies_fails_only_its_request_and_is_replaced(eiserver_service, azureml_session) -> None:
    """Two requests run on the two workers; one worker is killed: its request gets a 503, the other
    request is answered, a new worker takes the dead one's place and scores again."""
    body = azureml_session.request_body(np.linspace(0, 1, 784))

    def post() -> httpx.Response:
        return eiserver_service.http.post("/score", content=body, timeout=600,
                          headers={"Content-Type": "application/json"})

    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(post), pool.submit(post)]
        workers = eiserver_service.worker_pids()
        assert len(workers) == 2
        wait_for_gauge(eiserver_service, "scoring_in_flight", 2)  # both requests are being scored
        os.kill(workers[0], signal.SIGKILL)
        responses = [future.result() for future in pending]
    assert sorted(response.status_code for response in responses) == [200, 503]
    failed = next(response for response in responses if response.status_code == 503)
    assert "worker stopped" in failed.json()["message"] and failed.headers["retry-after"]
    answered = next(response for response in responses if response.status_code == 200)
    assert len(azureml_session.encryptor.decrypt(answered.json())) == 10
    wait_until(lambda: len(eiserver_service.worker_pids()) == 2, STATE_TIMEOUT_S, "a new worker")
    assert workers[0] not in eiserver_service.worker_pids()
    assert httpx.get(f"{eiserver_service.url}/ready").status_code == 200
    for response in [post(), post()]:  # both workers, the new one included, score again
        assert response.status_code == 200, response.text


def test_graceful_shutdown_finishes_the_requests_in_flight(azurite, azureml_session, tmp_path) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "SCORING_ENGINE": "eiserver", "WORKER_COUNT": "1",
           "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    body = azureml_session.request_body(np.linspace(0, 1, 784))
    with running_service(env, tmp_path / "shutdown.log") as service:
        result: dict[str, httpx.Response] = {}
        sender = threading.Thread(target=lambda: result.update(response=service.http.post(
            "/score", content=body, timeout=600, headers={"Content-Type": "application/json"})))
        sender.start()
        wait_for_gauge(service, "scoring_in_flight", 1)
        service.process.send_signal(signal.SIGTERM)
        sender.join(600)
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's.
        assert service.process.wait(60) in (0, -signal.SIGTERM)
    assert result["response"].status_code == 200, result["response"].text
    assert len(azureml_session.encryptor.decrypt(result["response"].json())) == 10
