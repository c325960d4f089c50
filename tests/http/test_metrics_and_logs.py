"""Metrics, request ids, Azure ML's timing header and the logs (JSON and text), over real HTTP."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from bench.processes import AZURITE_KEY, TEST_API_KEY, free_port, running_service, wait_until
from tests.http.test_tls import raw_http


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
    """Three scorings with fresh keys, then a 400: exact increases of each counter. The worker idle the
    shortest time takes the next request, so sequential requests stay in one worker: the new keys
    miss once and are a hit the next two times."""
    from client.azureml import AzureMLSession

    counted = [("scoring_engine_duration_seconds_count", 'engine="seal"', 3),
               ("scoring_http_requests_total", 'route="/score",status="200"', 3),
               ("scoring_http_requests_total", 'route="/score",status="400"', 1),
               ("scoring_http_request_duration_seconds_count", 'route="/score"', 4),
               ("scoring_key_cache_lookups_total", 'result="miss"', 1),
               ("scoring_key_cache_lookups_total", 'result="hit"', 2)]
    with AzureMLSession(url=service.url, conn_str=azurite, container="metrics-keys",
                        api_key=TEST_API_KEY) as session:
        before = service.http.get("/metrics").text
        assert metric_value(before, "scoring_in_flight") == 0  # both workers idle
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


# A percent-encoded newline, CR, ESC (a terminal colour) and backslash in the path, which the service
# sees decoded; and a C1 line break (NEL, U+0085 in latin-1), the one control character uvicorn lets
# through in a header value (it answers 400 to C0 controls and DEL there, before the app).
FORGED_PATH = b"/%0A2026-01-01%2000:00:00,000%20INFO%201%20forged:%20line%0D%1B[31m%5C"
ESCAPED_PATH = "/\\n2026-01-01 00:00:00,000 INFO 1 forged: line\\r\\x1b[31m\\\\"
FORGED_CLIENT_ID = b"client\x85id"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_control_characters_a_client_sends_are_escaped_in_the_log(azurite, tmp_path, log_format: str) -> None:
    """Each request with control characters in its path and ids is one access line, escaped: no client
    can end a log line, forge the next, or send escapes to a terminal. (`str.splitlines` breaks lines
    at every control character that some viewer takes for a line break: \\r, NEL, U+2028 included.)"""
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "LOG_FORMAT": log_format}
    with running_service(env, tmp_path / "service.log") as service:
        for number in range(2):
            head = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-request-id: forged-%d\r\n" % (
                FORGED_PATH, number)
            answer = raw_http(service.url, head + b"x-ms-client-request-id: " + FORGED_CLIENT_ID + b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 401 "), answer  # no credentials: still one access line
        wait_until(lambda: service.log().count("forged") >= 2, 60, "both access lines")
    log = service.log_path.read_text()  # read once the service has stopped: every line is written
    forged = [line for line in log.splitlines() if "forged" in line]
    assert not any(character in log for character in "\r\x1b\x85"), "no raw control character in the log"
    if log_format == "text":
        assert len(forged) == 2 and all(line.endswith(f" service.access: GET {ESCAPED_PATH} 401") for line in forged)
    else:
        records = [json.loads(line) for line in forged]
        assert [record["request_id"] for record in records] == ["forged-0", "forged-1"]
        assert all(record["path"] == ESCAPED_PATH and record["message"] == f"GET {ESCAPED_PATH} 401"
                   and record["client_request_id"] == "client\\x85id" for record in records)


def test_series_per_identity_are_only_on_the_metrics_port(azurite, tmp_path) -> None:
    """Bob scores an image; alice, authenticated on the main port, sees the service's metrics but no
    series labelled with an identity (who else uses the service, and how much); the scraper's port,
    kept off the public network, has them. Paths of a model are labelled with their route's template."""
    from client.scoring import ScoringClient

    metrics_port = free_port()
    alice = {"Authorization": "Bearer alice-k1"}
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "API_KEYS": "alice=alice-k1,bob=bob-k1",
           "METRICS_PORT": str(metrics_port)}
    labelled = {("GET", "/v1/models/mnist"): 'route="/v1/models/{name}",status="200"',
                ("GET", "/v1/models/mnist/versions/1/keys"): 'route="/v1/models/{name}/versions/{version}/keys",'
                                                              'status="200"',
                ("DELETE", f"/v1/models/mnist/keys/{'0' * 64}"): 'route="/v1/models/{name}/keys/{key_id}",status="404"',
                ("GET", "/models/mnist"): 'route="other",status="404"'}
    with running_service(env, tmp_path / "service.log") as service:
        with ScoringClient(service.url, api_key="bob-k1") as bob:
            bob.predict(np.zeros((1, 28, 28), np.uint8))
        for method, path in labelled:
            httpx.request(method, f"{service.url}{path}", headers=alice)
        shown = httpx.get(f"{service.url}/metrics", headers=alice)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert shown.status_code == 200 and metric_value(shown.text, "scoring_http_requests_total",
                                                     'route="/v1/score",status="200"') == 1
    assert {labels: metric_value(shown.text, "scoring_http_requests_total", labels) for labels in labelled.values()
            } == {labels: 1 for labels in labelled.values()}
    assert "identity=" not in shown.text
    assert metric_value(scraped, "scoring_images_total", 'identity="bob"') == 1
