"""Bounded under hostile load, over real HTTP on loopback: body bytes held at once (MAX_QUEUE_BYTES,
refused before the body is read), native headers checked from the first bytes, bodies that stall
or trickle cut with 408, connections that never finish their head closed, and work whose client
went away dropped rather than scored.

Requests are written byte by byte on raw sockets (one place: `RawRequest`), because what is under
test is what the service does before a body is complete. "Refused before the body is read" is
observed with `Expect: 100-continue`: the service asks for the body only when it accepts it, so a
503 read by a client that has sent no body byte was decided from the headers alone.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from bench.processes import TEST_HEADERS, TEST_IDENTITY, ServiceProcess, running_service, wait_until
from bfv.encryption import ClientKeys
from bfv.plan import PublicPlan
from bfv.wire import REQUEST_HEADER_SIZE
from service.http.auth import Identity
from service.v1.keys import key_name
from service.settings import Settings
from tests.deploy.test_manifests import worst_case_replica_mib
from tests.held_storage import HeldStorage

MiB = 1024 * 1024
BINARY = {"content-type": "application/octet-stream", **TEST_HEADERS}
GENEROUS_S = 300  # bound on waiting for a state on a loaded machine; never a measure of speed
# v1 keys of this module's services go to containers of their own in the session's Azurite: a key stored
# here never counts against the test identity's MAX_KEYS_PER_IDENTITY in another module's `public-keys`.
BOUNDS_KEY_CONTAINER = "bounds-keys"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class RawRequest:
    """One HTTP/1.1 request on its own connection, sent as the test chooses: head, body bytes, pauses."""

    def __init__(self, url: str, path: str, size: int, expect_continue: bool = False,
                 headers: dict[str, str] = BINARY, method: str = "POST") -> None:
        address = urlsplit(url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=GENEROUS_S)
        self.reader = self.sock.makefile("rb")
        expect = b"Expect: 100-continue\r\n" if expect_continue else b""
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {address.netloc}\r\n".encode()
                          + "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
                          + f"Content-Length: {size}\r\n".encode() + expect + b"\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Reply:
        """The next response on the connection (an interim 100 Continue counts as one); fails if none
        comes within GENEROUS_S."""
        try:
            status_line = self.reader.readline()
        except TimeoutError:
            raise AssertionError(f"no answer within {GENEROUS_S} s") from None
        assert status_line, "connection closed without an answer"
        status = int(status_line.split()[1])
        headers = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.reader.read(int(headers.get("content-length", 0))) if status >= 200 else b""
        return Reply(status, headers, body)

    def closed_by_server(self) -> bool:
        """Whether the service closes the connection within GENEROUS_S (reads end of stream)."""
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture(scope="module")
def bounded_service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service at its defaults (2 workers), but bodies may pause long enough for the test's
    barriers on a loaded machine."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "2", "BODY_TIMEOUT_S": str(GENEROUS_S),
           "KEY_CONTAINER": BOUNDS_KEY_CONTAINER}
    with running_service(env, tmp_path_factory.mktemp("bounds") / "service.log") as service:
        yield service


@pytest.fixture(scope="module")
def client_keys(bounded_service: ServiceProcess) -> ClientKeys:
    plan = PublicPlan.from_description(bounded_service.http.get("/v1/model", timeout=30).json())
    keys = ClientKeys(plan)
    response = httpx.post(f"{bounded_service.url}/v1/keys", content=keys.public_key, headers=BINARY, timeout=60)
    assert response.status_code == 201, response.text
    return keys


def score_one(service: ServiceProcess, keys: ClientKeys, image: np.ndarray) -> np.ndarray:
    """A valid single-image request, answered 200; returns its decrypted (exact, integer) scores."""
    response = httpx.post(f"{service.url}/v1/score", content=keys.encrypt_single(image), headers=BINARY,
                          timeout=GENEROUS_S)
    assert response.status_code == 200, response.text
    return keys.decrypt_single(response.content)


def wait_for_metric(service: ServiceProcess, name: str, value: float, **labels: str) -> None:
    wait_until(lambda: service.metric(name, 0.0, **labels) == value, GENEROUS_S, f"{name}{labels} == {value}")


def test_32_maximum_batches_at_once_stay_within_the_memory_budget(bounded_service, client_keys,
                                                                   mnist_test_images) -> None:
    service, keys = bounded_service, client_keys
    images = mnist_test_images[0][:64].reshape(64, -1).astype(np.int64)
    batch = keys.encrypt_batch(images)
    expected = score_one(service, keys, images[0])
    # One identity sends them all: it may hold its share of the budget (MAX_IDENTITY_SHARE), not all of it.
    settings = Settings()
    accepted_count = int(settings.max_identity_share * settings.max_queue_bytes) // len(batch)
    assert 1 <= accepted_count < 32
    # The budget is the process's: start from an empty one, whatever ran on this service before.
    wait_for_metric(service, "scoring_body_bytes_reserved", 0)
    refused_before = service.metric("scoring_bodies_refused_total", 0.0, reason="queue_bytes")
    idle_mib = service.memory_mib()
    service.reset_peak_memory()

    heads_read = threading.Barrier(32, timeout=GENEROUS_S)
    bodies_almost_sent = threading.Barrier(accepted_count + 1, timeout=GENEROUS_S)
    finish = threading.Event()
    outcomes: list[tuple[int, int, bytes]] = []
    errors: list[BaseException] = []

    def upload() -> None:
        """Appends (status before any body byte, final status, final body) to `outcomes`; an error
        breaks both barriers, so no other upload waits for this one."""
        try:
            request = RawRequest(service.url, "/v1/score/batch", len(batch), expect_continue=True)
            try:
                first = request.read()
                heads_read.wait()  # every decision is made while the accepted ones hold their bytes
                if first.status != 100:
                    assert first.headers["connection"] == "close" and first.headers["retry-after"]
                    outcomes.append((first.status, first.status, b""))
                    return
                request.send(batch[:-1])
                bodies_almost_sent.wait()
                assert finish.wait(GENEROUS_S), "the test never let the uploads finish"
                request.send(batch[-1:])
                final = request.read()
                outcomes.append((first.status, final.status, final.body))
            finally:
                request.close()
        except BaseException as exc:  # reported by the test below, not lost in a thread
            errors.append(exc)
            heads_read.abort()
            bodies_almost_sent.abort()

    threads = [threading.Thread(target=upload) for _ in range(32)]
    for thread in threads:
        thread.start()
    try:
        try:
            bodies_almost_sent.wait()
        except threading.BrokenBarrierError:
            pytest.fail(f"the accepted uploads never all held their bodies: {errors!r}")
        # During: all accepted bodies are held (all but one byte each); a valid request is still answered.
        assert service.metric("scoring_body_bytes_reserved") == accepted_count * len(batch)
        assert np.array_equal(score_one(service, keys, images[0]), expected)
    finally:
        finish.set()
        for thread in threads:
            thread.join(GENEROUS_S)
    assert not any(thread.is_alive() for thread in threads), f"uploads still running after {GENEROUS_S} s"
    assert errors == []
    statuses = sorted((first, final) for first, final, _ in outcomes)
    assert statuses == sorted([(100, 200)] * accepted_count + [(503, 503)] * (32 - accepted_count))
    # The accepted batches were scored, not only answered: image 0 scores as it does alone (exact scores).
    for _, _, reply in (outcome for outcome in outcomes if outcome[1] == 200):
        assert np.array_equal(keys.decrypt_batch(reply)[0], expected)
    assert np.array_equal(score_one(service, keys, images[0]), expected)  # and after
    peak_mib = service.memory_mib("VmHWM")
    print(f"service RSS (web + workers): idle {idle_mib:.0f} MiB, peak under 32 uploads {peak_mib:.0f} MiB "
          f"(+{peak_mib - idle_mib:.0f}); {accepted_count} accepted, {32 - accepted_count} refused")
    assert peak_mib - idle_mib <= 512
    assert peak_mib <= worst_case_replica_mib(2)
    assert service.metric("scoring_bodies_refused_total", reason="queue_bytes") - refused_before == 32 - accepted_count
    wait_for_metric(service, "scoring_body_bytes_reserved", 0)  # every reservation given back


def test_a_malformed_batch_is_refused_from_its_first_bytes(bounded_service, client_keys, mnist_test_images) -> None:
    batch = client_keys.encrypt_batch(mnist_test_images[0][:2].reshape(2, -1).astype(np.int64))
    junk = b"JUNK" + batch[4:]
    request = RawRequest(bounded_service.url, "/v1/score/batch", len(junk))
    try:
        request.send(junk[:REQUEST_HEADER_SIZE])  # the rest is never sent
        reply = request.read()
        assert reply.status == 422 and "bad magic" in reply.body.decode()
        assert reply.headers["connection"] == "close" and request.closed_by_server()
    finally:
        request.close()


@pytest.fixture(scope="module")
def held_storage() -> Iterator[HeldStorage]:
    """Storage that holds every request until a test releases it (then answers 404). A test that
    needs a lookup held calls `hold()` first: whatever an earlier test released, it holds again."""
    with HeldStorage() as storage:
        yield storage


@pytest.fixture(scope="module")
def impatient_service(held_storage: HeldStorage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One worker, short body and head deadlines, keys on `held_storage`."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": held_storage.connection_string(), "WORKER_COUNT": "1",
           "BODY_TIMEOUT_S": "2", "HEADER_TIMEOUT_S": "2", "STORAGE_TIMEOUT_S": str(GENEROUS_S)}
    with running_service(env, tmp_path_factory.mktemp("impatient") / "service.log") as service:
        yield service


@pytest.fixture(scope="module")
def impatient_plan(impatient_service: ServiceProcess) -> PublicPlan:
    return PublicPlan.from_description(impatient_service.http.get("/v1/model", timeout=30).json())


def single_request(plan: PublicPlan) -> tuple[bytes, str]:
    """A well-formed single-image request under a fresh key, and that key's id."""
    keys = ClientKeys(plan)
    return keys.encrypt_single(np.zeros(plan.n_features, dtype=np.int64)), keys.key_id


def test_a_body_that_stalls_is_cut_with_408(impatient_service, impatient_plan) -> None:
    body, _ = single_request(impatient_plan)
    request = RawRequest(impatient_service.url, "/v1/score", len(body))
    try:
        request.send(body[:100])
        reply = request.read()  # nothing more is sent: the service cuts the body after BODY_TIMEOUT_S
        assert reply.status == 408 and "100 of 30800 bytes" in reply.body.decode()
        assert reply.headers["connection"] == "close" and request.closed_by_server()
    finally:
        request.close()


def test_a_body_that_trickles_below_the_floor_is_cut_with_408(impatient_service, impatient_plan) -> None:
    """One byte every half second never pauses BODY_TIMEOUT_S, but is far below BODY_MIN_BYTES_PER_S."""
    body, _ = single_request(impatient_plan)
    request = RawRequest(impatient_service.url, "/v1/score", len(body))
    try:
        # Bounded by time, not by the body's 30800 bytes (4 hours at this pace if the floor were broken).
        deadline = time.monotonic() + GENEROUS_S
        sent = 0
        while not select_readable(request.sock, 0.5):
            assert time.monotonic() < deadline, f"a trickling body was not cut within {GENEROUS_S} s"
            assert sent < len(body), "the whole body trickled in without being cut"
            request.send(body[sent : sent + 1])
            sent += 1
        reply = request.read()
        assert reply.status == 408 and "bytes/s" in reply.body.decode()
    finally:
        request.close()


def select_readable(sock: socket.socket, timeout_s: float) -> bool:
    return bool(select.select([sock], [], [], timeout_s)[0])


@pytest.mark.parametrize("head", [b"", b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Le"], ids=["idle", "partial"])
def test_connections_that_never_finish_a_request_head_are_closed(impatient_service, head: bytes) -> None:
    address = urlsplit(impatient_service.url)
    with socket.create_connection((address.hostname, address.port), timeout=GENEROUS_S) as sock:
        sock.sendall(head)
        try:
            assert sock.recv(1) == b""  # closed by the service after HEADER_TIMEOUT_S, with no answer
        except TimeoutError:
            pytest.fail(f"a connection with an unfinished head stayed open for {GENEROUS_S} s")


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "unfinished"])
def test_a_request_head_over_max_header_bytes_is_refused_with_431(impatient_service, whole: bool) -> None:
    """Refused whether the head is complete or still arriving (never finished: only its bytes count)."""
    limit = Settings().max_header_bytes
    address = urlsplit(impatient_service.url)
    head = f"GET /ready HTTP/1.1\r\nHost: {address.netloc}\r\nX-Padding: {'a' * limit}".encode()
    with socket.create_connection((address.hostname, address.port), timeout=GENEROUS_S) as sock:
        sock.sendall(head + (b"\r\n\r\n" if whole else b""))
        reader = sock.makefile("rb")
        assert reader.readline().split()[1] == b"431"
        while (line := reader.readline()) not in (b"\r\n", b""):
            assert line.lower() != b"connection: keep-alive\r\n"
        assert b"request head over the limit" in reader.readline()
        assert reader.read(1) == b""  # and the connection is closed


def test_a_request_head_at_max_header_bytes_is_served(impatient_service) -> None:
    address = urlsplit(impatient_service.url)
    fixed = f"GET /ready HTTP/1.1\r\nHost: {address.netloc}\r\nX-Padding: \r\n\r\n".encode()
    padding = b"a" * (Settings().max_header_bytes - len(fixed))
    with socket.create_connection((address.hostname, address.port), timeout=GENEROUS_S) as sock:
        sock.sendall(fixed.replace(b"X-Padding: ", b"X-Padding: " + padding))
        assert sock.makefile("rb").readline().split()[1] == b"200"


def client_gone_count(service: ServiceProcess, stage: str) -> float:
    return service.metric("scoring_client_gone_total", 0.0, stage=stage)


def answered_499(service: ServiceProcess) -> float:
    return service.metric("scoring_http_requests_total", 0.0, route="/v1/score", status="499")


def test_a_client_that_leaves_mid_body_is_one_info_line(impatient_service, impatient_plan) -> None:
    service = impatient_service
    body, _ = single_request(impatient_plan)
    gone_before, recorded_before = client_gone_count(service, "body"), answered_499(service)
    log_start = len(service.log())
    request = RawRequest(service.url, "/v1/score", len(body))
    request.send(body[: len(body) // 2])
    request.close()
    wait_for_metric(service, "scoring_client_gone_total", gone_before + 1, stage="body")
    # 499 is recorded once the (unsent) answer is done, a step after the counter: waited for, not assumed.
    wait_for_metric(service, "scoring_http_requests_total", recorded_before + 1, route="/v1/score", status="499")
    log = service.log()[log_start:]  # this test's lines only
    assert log.count("client went away after 15400 of 30800 body bytes of POST /v1/score") == 1, log
    assert "Traceback" not in log and "ERROR" not in log


def test_a_request_whose_client_went_away_is_not_scored(impatient_service, impatient_plan, held_storage) -> None:
    """A holds the only worker (its key lookup waits on storage); B waits in the queue and its client
    leaves; C comes after. Storage sees A's and C's key ids, never B's: B was dropped, not scored."""
    service = impatient_service
    (body_a, key_a), (body_b, key_b), (body_c, key_c) = (single_request(impatient_plan) for _ in range(3))
    gone_before, recorded_before = client_gone_count(service, "waiting"), answered_499(service)
    log_start = len(service.log())
    held_storage.hold()
    a = RawRequest(service.url, "/v1/score", len(body_a))
    b = RawRequest(service.url, "/v1/score", len(body_b))
    try:
        a.send(body_a)
        held_storage.wait_for(key_a)  # A is in the only worker, on its key lookup, until released
        wait_for_metric(service, "scoring_in_flight", 1)
        b.send(body_b)
        wait_for_metric(service, "scoring_queue_depth", 1)  # B waits for the worker A holds
        b.close()
        wait_for_metric(service, "scoring_client_gone_total", gone_before + 1, stage="waiting")
        assert service.metric("scoring_queue_depth") == 0  # B left the queue before it was counted gone
        wait_for_metric(service, "scoring_http_requests_total", recorded_before + 1, route="/v1/score", status="499")
        held_storage.release()
        assert a.read().status == 404
    finally:
        held_storage.release()  # whatever happened, no later test waits on this storage
        a.close()
        b.close()
    response = httpx.post(f"{service.url}/v1/score", content=body_c, headers=BINARY, timeout=GENEROUS_S)
    assert response.status_code == 404, response.text
    # One worker, first come first served: had B been scored, its lookup would be between A's and C's.
    looked_up = " ".join(held_storage.request_lines)
    assert key_a in looked_up and key_c in looked_up and key_b not in looked_up
    log = service.log()[log_start:]
    assert log.count("client went away before its answer to POST /v1/score; its request was dropped") == 1, log


def test_a_scoring_whose_request_timed_out_is_dropped_before_evaluation(azurite: str, tmp_path) -> None:
    """The worker is held on storage past SCORING_TIMEOUT_MS: the client gets its 504, and when the
    keys arrive the worker drops the scoring instead of evaluating it for nobody."""
    container_name = "timeout-keys"  # this test's own: its key counts against no other test's quota
    with HeldStorage(upstream=azurite) as storage:
        env = {"AZURE_STORAGE_CONNECTION_STRING": storage.connection_string(), "WORKER_COUNT": "1",
               "SCORING_TIMEOUT_MS": "10000", "STORAGE_TIMEOUT_S": str(GENEROUS_S), "KEY_CONTAINER": container_name}
        with running_service(env, tmp_path / "timeout.log") as service:
            try:
                plan = PublicPlan.from_description(service.http.get("/v1/model", timeout=30).json())
                keys = ClientKeys(plan)
                container = BlobServiceClient.from_connection_string(azurite).get_container_client(container_name)
                if not container.exists():
                    container.create_container()
                blob = key_name(Identity(TEST_IDENTITY, may_batch=True).namespace, "mnist/1", keys.key_id)
                container.upload_blob(blob, keys.public_key, overwrite=True)  # not through the hold
                body = keys.encrypt_single(np.zeros(plan.n_features, dtype=np.int64))
                request = RawRequest(service.url, "/v1/score", len(body))
                try:
                    request.send(body)
                    storage.wait_for(keys.key_id)  # held: the 504 comes before the keys can
                    assert request.read().status == 504
                finally:
                    request.close()
                storage.release()
                wait_until(lambda: "scoring dropped before evaluation" in service.log(), GENEROUS_S, "the drop")
                again = httpx.post(f"{service.url}/v1/score", content=body, headers=BINARY, timeout=GENEROUS_S)
                assert again.status_code == 200, again.text  # the same worker, the keys now cached
            finally:
                storage.release()  # before the service stops: it would wait for a held scoring
