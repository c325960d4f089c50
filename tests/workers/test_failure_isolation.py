"""Bounded resources and failure isolation, over real HTTP: the queue bound (503), the timeout (504), a
worker killed mid-request, graceful shutdown.

Each test needs requests to stay in flight while it acts. They are held there on purpose, not by a slow
engine: the service's key store is a `HeldStorage` in front of Azurite, and a scoring waits in its
worker, on the key lookup, until the test releases storage. Every Azure ML scoring looks its keys up
(a cached key is revalidated with a conditional request), so every request can be held. The tests
wait for the state they need (the lookups storage saw, the service's own gauges, its log), with
generous bounds, never for an assumed scoring time. Since the engine's speed no longer matters, the
services run the fast `seal` engine; the replies are decrypted and compared with the bundled model.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager

import httpx
import numpy as np

from bench.processes import GENEROUS_SCORING_TIMEOUT_MS, ServiceProcess, running_service, wait_until
from tests.held_storage import HeldStorage

# Generous bounds for states that arrive within milliseconds to tens of seconds on a slow machine.
STATE_TIMEOUT_S = 300
FEATURES = np.linspace(0, 1, 784)
# CKKS error of the seal engine against scikit-learn's decision_function, measured on this input and
# 20 MNIST test images: at most 1.1e-6 (scores up to ~6.4). 1e-4 leaves a margin of ~100x.
CKKS_ATOL = 1e-4
DROPPED = "scoring dropped before evaluation"


def wait_for_gauge(service: ServiceProcess, name: str, value: float) -> None:
    wait_until(lambda: service.metric(name) == value, STATE_TIMEOUT_S, f"{name} == {value}")


@contextmanager
def held_service(azurite: str, log_path, **env: str) -> Iterator[tuple[ServiceProcess, HeldStorage]]:
    """A service (seal engine) whose key store is held storage relaying to `azurite`. Storage is
    released before the service stops, so a failing test never leaves a scoring held in shutdown."""
    with HeldStorage(upstream=azurite) as storage:
        settings = {"AZURE_STORAGE_CONNECTION_STRING": storage.connection_string(), "SCORING_ENGINE": "seal",
                    "STORAGE_TIMEOUT_S": str(STATE_TIMEOUT_S), **env}
        with running_service(settings, log_path) as service:
            try:
                yield service, storage
            finally:
                storage.release()


def post(service: ServiceProcess, body: str) -> httpx.Response:
    return service.http.post("/score", content=body, timeout=STATE_TIMEOUT_S,
                             headers={"Content-Type": "application/json"})


def assert_scores_like_the_model(session, estimator, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    scores = np.asarray(session.encryptor.decrypt(response.json()))
    np.testing.assert_allclose(scores, estimator.decision_function(FEATURES[None, :])[0], atol=CKKS_ATOL, rtol=0)


def test_a_full_queue_answers_503_at_once_and_liveness_stays_up(azurite, azureml_session, bundled_estimator,
                                                                 tmp_path) -> None:
    """One scoring runs (held), one waits (nothing times out), a third is refused as busy at once."""
    body = azureml_session.request_body(FEATURES)
    env = {"WORKER_COUNT": "1", "MAX_CONCURRENT": "1", "MAX_QUEUE": "1",
           "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    with held_service(azurite, tmp_path / "queue.log", **env) as (service, storage), ThreadPoolExecutor(2) as pool:
        try:
            running = pool.submit(post, service, body)
            storage.wait_for(azureml_session.key_id)  # in the only worker, on its key lookup, until released
            wait_for_gauge(service, "scoring_in_flight", 1)
            queued = pool.submit(post, service, body)
            wait_for_gauge(service, "scoring_queue_depth", 1)  # and it stays: the one running is held
            refused = post(service, body)
            assert refused.status_code == 503, refused.text
            assert "busy" in refused.json()["message"] and refused.headers["retry-after"]
            assert not running.done() and not queued.done()
            assert httpx.get(f"{service.url}/", timeout=30).text == "Healthy"
            assert service.http.get("/ready", timeout=30).status_code == 200
        finally:
            storage.release()
        for accepted in (running.result(STATE_TIMEOUT_S), queued.result(STATE_TIMEOUT_S)):
            assert_scores_like_the_model(azureml_session, bundled_estimator, accepted)
        wait_for_gauge(service, "scoring_in_flight", 0)
        assert service.metric("scoring_queue_depth") == 0


def test_timeouts_answer_504_and_give_back_the_queue_place_and_the_slot(azurite, azureml_session, tmp_path) -> None:
    """A held scoring times out (504) and keeps its worker until its keys arrive; one waiting behind it
    times out in the queue (504). Once the first is dropped, slot and queue place are free again:
    two new requests are one running and one queued (both time out), not one refused as busy."""
    body = azureml_session.request_body(FEATURES)
    key_id = azureml_session.key_id
    env = {"WORKER_COUNT": "1", "MAX_CONCURRENT": "1", "MAX_QUEUE": "1", "SCORING_TIMEOUT_MS": "3000"}
    with held_service(azurite, tmp_path / "timeouts.log", **env) as (service, storage), ThreadPoolExecutor(2) as pool:
        for round_ in (1, 2):
            storage.hold()
            lookups = storage.count(key_id)
            running = pool.submit(post, service, body)
            storage.wait_for(key_id, lookups + 1)  # held in the worker: it cannot finish before release
            # The only slot is taken until release, so this one can only wait in the queue, then time out.
            queued = pool.submit(post, service, body)
            answers = [running.result(STATE_TIMEOUT_S), queued.result(STATE_TIMEOUT_S)]
            assert [answer.status_code for answer in answers] == [504, 504], [answer.text for answer in answers]
            assert all("within 3000 ms" in answer.json()["message"] for answer in answers)
            # The timed-out scoring still holds its worker; the queued one has given its place back.
            assert service.metric("scoring_in_flight") == 1 and service.metric("scoring_queue_depth") == 0
            assert httpx.get(f"{service.url}/", timeout=30).text == "Healthy"
            storage.release()
            # Its keys arrive, the worker sees the request was answered and skips the evaluation.
            wait_until(lambda: service.log().count(DROPPED) == round_, STATE_TIMEOUT_S, f"drop number {round_}")
            wait_for_gauge(service, "scoring_in_flight", 0)
        assert service.http.get("/ready", timeout=30).status_code == 200


def test_a_worker_that_dies_fails_only_its_request_and_is_replaced(azurite, azureml_session, bundled_estimator,
                                                                   tmp_path) -> None:
    """Two requests are held on the two workers; one worker is killed: its request gets a 503 while the
    other is still held, which is then answered; a new worker takes the dead one's place and scores."""
    body = azureml_session.request_body(FEATURES)
    key_id = azureml_session.key_id
    env = {"WORKER_COUNT": "2", "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    with held_service(azurite, tmp_path / "kill.log", **env) as (service, storage), ThreadPoolExecutor(2) as pool:
        workers = service.worker_pids()
        assert len(workers) == 2
        try:
            pending = [pool.submit(post, service, body), pool.submit(post, service, body)]
            storage.wait_for(key_id, 2)  # a worker runs one call at a time: both are held, one each
            wait_for_gauge(service, "scoring_in_flight", 2)
            os.kill(workers[0], signal.SIGKILL)
            done, still_held = wait(pending, STATE_TIMEOUT_S, return_when=FIRST_COMPLETED)
            assert len(done) == 1 and len(still_held) == 1, "the killed worker's request was not answered alone"
            failed = done.pop().result()
            assert failed.status_code == 503, failed.text
            assert "worker stopped" in failed.json()["message"] and failed.headers["retry-after"]
            other = next(iter(still_held))
            wait_for_gauge(service, "scoring_in_flight", 1)  # the dead worker's slot is given back ...
            assert not other.done()  # ... while the other request is still being scored
        finally:
            storage.release()
        assert_scores_like_the_model(azureml_session, bundled_estimator, other.result(STATE_TIMEOUT_S))
        wait_until(lambda: len(service.worker_pids()) == 2 and workers[0] not in service.worker_pids(),
                   STATE_TIMEOUT_S, "a new worker in the dead one's place")
        replacement = next(pid for pid in service.worker_pids() if pid not in workers)
        assert service.http.get("/ready", timeout=30).status_code == 200
        # Both workers, the new one included, score again: two requests held at once are one per worker.
        storage.hold()
        lookups = storage.count(key_id)
        try:
            again = [pool.submit(post, service, body), pool.submit(post, service, body)]
            storage.wait_for(key_id, lookups + 2)  # the new worker looks up only once it has loaded the model
        finally:
            storage.release()
        for response in again:
            assert_scores_like_the_model(azureml_session, bundled_estimator, response.result(STATE_TIMEOUT_S))
        assert service.metric("scoring_key_cache_bytes", engine="seal", worker=str(replacement)) > 0


def test_graceful_shutdown_finishes_the_requests_in_flight(azurite, azureml_session, bundled_estimator,
                                                           tmp_path) -> None:
    """SIGTERM arrives while a scoring is held in flight; the service waits for it, answers it, exits."""
    body = azureml_session.request_body(FEATURES)
    env = {"WORKER_COUNT": "1", "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
    with held_service(azurite, tmp_path / "shutdown.log", **env) as (service, storage), ThreadPoolExecutor(1) as pool:
        try:
            pending = pool.submit(post, service, body)
            storage.wait_for(azureml_session.key_id)
            wait_for_gauge(service, "scoring_in_flight", 1)
            service.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "Shutting down" in service.log(), STATE_TIMEOUT_S, "uvicorn shutting down")
            # Shutting down with the request still in flight (held): it has not been answered, nor the
            # process exited.
            assert not pending.done() and service.process.poll() is None
        finally:
            storage.release()
        response = pending.result(STATE_TIMEOUT_S)
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's.
        assert service.process.wait(STATE_TIMEOUT_S) in (0, -signal.SIGTERM)
    assert_scores_like_the_model(azureml_session, bundled_estimator, response)
