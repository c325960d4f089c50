"""Metrics, request ids, Azure ML's timing header and JSON logs, over real HTTP."""

from __future__ import annotations

import json

import httpx
import numpy as np

from bench.processes import AZURITE_KEY, TEST_API_KEY, running_service, wait_until


def metric_value(text: str, name: str, labels: str = "", absent: float | None = None) -> float:
    """The value of series `name{labels}` in a /metrics text; `absent` if it is not there (a counter
    that was never incremented, with absent=0.0), else an AssertionError."""
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    if absent is not None:
        return absent
    raise AssertionError(f"{prefix} not in /metrics")


def test_metrics_count_requests_scoring_and_key_cache(service, azurite: str) -> None:
    """Three scorings with fresh keys, then a 400: exact increases of each counter. The two workers
    take sequential requests in turn (an idle worker goes to the back of the queue), so the new
    keys miss once in each worker and are a hit the third time."""
    from client.azureml import AzureMLSession

    counted = [("scoring_engine_duration_seconds_count", 'engine="seal"', 3),
               ("scoring_http_requests_total", 'route="/score",status="200"', 3),
               ("scoring_http_requests_total", 'route="/score",status="400"', 1),
               ("scoring_http_request_duration_seconds_count", 'route="/score"', 4),
               ("scoring_key_cache_lookups_total", 'result="miss"', 2),
               ("scoring_key_cache_lookups_total", 'result="hit"', 1)]
    with AzureMLSession(url=service.url, conn_str=azurite, container="metrics-keys",
                        api_key=TEST_API_KEY) as session:
        before = service.http.get("/metrics").text
        assert metric_value(before, "scoring_in_flight") == 0  # both workers idle: they take turns
        for _ in range(3):
            session.scores(np.linspace(0, 1, 784))
        service.http.post("/score", content=b"{not json", headers={"Content-Type": "application/json"})
        text = service.http.get("/metrics").text
    increases = {(name, labels): metric_value(text, name, labels, absent=0.0) - metric_value(before, name, labels,
                                                                                               absent=0.0)
                 for name, labels, _ in counted}
    assert increases == {(name, labels): expected for name, labels, expected in counted}
    assert metric_value(text, "scoring_queue_depth") == 0
    assert metric_value(text, "scoring_in_flight") == 0
    assert any(line.startswith('scoring_key_cache_bytes{engine="seal",worker=') and float(line.split()[-1]) > 1e6
               for line in text.splitlines())


def test_request_ids_and_run_time_header(service, azureml_session) -> None:
    body = azureml_session.request_body(np.linspace(0, 1, 784))
    response = service.http.post("/score", content=body, timeout=60, headers={
        "Content-Type": "application/json", "x-request-id": "req-42", "x-ms-client-request-id": "client-7"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["x-ms-client-request-id"] == "client-7"
    assert float(response.headers["x-ms-run-fn-exec-ms"]) > 0
    generated = httpx.get(f"{service.url}/").headers["x-request-id"]
    assert len(generated) == 36 and generated != httpx.get(f"{service.url}/").headers["x-request-id"]
    rejected = service.http.post("/score", content=b"x" * 5_000_000, headers={"x-request-id": "big"})
    assert rejected.status_code == 413 and rejected.headers["x-request-id"] == "big"


def test_json_access_logs_carry_the_request_id_and_no_secrets(azurite, azureml_session, tmp_path) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "LOG_FORMAT": "json"}
    with running_service(env, tmp_path / "json.log") as service:
        body = azureml_session.request_body(np.linspace(0, 1, 784))
        response = service.http.post("/score", content=body, timeout=60,
                              headers={"Content-Type": "application/json", "x-request-id": "trace-me"})
        assert response.status_code == 200
        # The access line is written just after the response is sent: wait for it (bounded).
        wait_until(lambda: "trace-me" in service.log(), 120, "the access log line")
    log = service.log_path.read_text()  # read once the service has stopped: every line is written
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("request_id") == "trace-me"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/score" and access[0]["duration_ms"] > 0
    assert {"time", "level", "name", "message"} <= set(access[0])
    assert all(line.startswith("{") for line in log.splitlines() if line.strip()), "every log line is JSON"
    assert AZURITE_KEY not in log and "AccountKey" not in log
