"""What one caller, or several, can make the service hold, over real HTTP on raw sockets: nothing on an
open path (no credentials, no body), only a fair share of the body budget and of the scoring queue for
an identity, and requests that fail the checks charged like any other.

Uploads are held with `Expect: 100-continue` and no body byte sent: the service reserves a body's
declared size when it answers 100, and gives it back only when the body arrives or times out
(BODY_TIMEOUT_S, set far beyond the test's length), so what is held is the test's to decide.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from bench.processes import ServiceProcess, running_service
from bfv.encryption import ClientKeys
from bfv.plan import PublicPlan
from client import bearer
from service.settings import Settings
from tests.held_storage import HeldStorage
from tests.http.test_bounds_under_hostile_load import GENEROUS_S, RawRequest, wait_for_metric
from tests.workers.test_failure_isolation import STATE_TIMEOUT_S, wait_for_gauge

IDENTITIES = {"alice": "alice-key-5d1f0c", "bob": "bob-key-9a3e77", "carol": "carol-key-1b8c42"}
OPEN_PATHS = ["/", "/ready", "/demo", "/demo/index.html", "/does-not-matter-which"]


def binary(identity: str) -> dict[str, str]:
    return {"content-type": "application/octet-stream", **bearer(IDENTITIES[identity])}


@pytest.fixture(scope="module")
def shared_service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Three identities, all allowed to batch; bodies may wait for the test; metering on (a large quota)."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "BODY_TIMEOUT_S": str(GENEROUS_S),
           "API_KEYS": ",".join(f"{name}={key}" for name, key in IDENTITIES.items()), "BATCH_IDENTITIES": "*",
           "KEY_CONTAINER": "fair-share-keys", "RATE_LIMIT": "100000/hour"}
    with running_service(env, tmp_path_factory.mktemp("fair") / "service.log") as service:
        service.http.headers.update(bearer(IDENTITIES["alice"]))
        yield service


@pytest.fixture(scope="module")
def keys_of(shared_service: ServiceProcess) -> dict[str, ClientKeys]:
    """Each identity's stored v1 key pair (keys are owned per identity)."""
    plan = PublicPlan.from_description(shared_service.http.get("/v1/model").json())
    keys = {}
    for name in IDENTITIES:
        keys[name] = ClientKeys(plan)
        response = httpx.post(f"{shared_service.url}/v1/keys", content=keys[name].public_key, headers=binary(name),
                              timeout=60)
        assert response.status_code == 201, response.text
    return keys


def scored(service: ServiceProcess, keys: ClientKeys, identity: str, image: np.ndarray) -> np.ndarray:
    response = httpx.post(f"{service.url}/v1/score", content=keys.encrypt_single(image), headers=binary(identity),
                          timeout=GENEROUS_S)
    assert response.status_code == 200, response.text
    return keys.decrypt_single(response.content)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_open_paths_take_no_body_and_reserve_nothing(shared_service, keys_of, mnist_test_images, method) -> None:
    """32 unauthenticated uploads of 4 MiB declared to each open path: each answered 413 from its head
    (before a body byte is sent, no 100 Continue) and closed; the budget stays empty meanwhile, and an
    identity is scored as before."""
    service = shared_service
    image = mnist_test_images[0][0].reshape(-1).astype(np.int64)
    expected = scored(service, keys_of["alice"], "alice", image)
    wait_for_metric(service, "scoring_body_bytes_reserved", 0)
    uploads = [RawRequest(service.url, path, 4 * 1024 * 1024, expect_continue=True, method=method,
                          headers={"content-type": "application/octet-stream"})
               for path in OPEN_PATHS[:-1] for _ in range(32)]
    try:
        for upload in uploads:
            reply = upload.read()
            assert reply.status == 413, reply
            assert "takes no request body" in json.loads(reply.body)["message"]
            assert reply.headers["connection"] == "close" and upload.closed_by_server()
        assert service.metric("scoring_body_bytes_reserved") == 0
        assert np.array_equal(scored(service, keys_of["alice"], "alice", image), expected)
    finally:
        for upload in uploads:
            upload.close()
    # A path that is not open needs credentials first: 401, and nothing reserved either.
    stranger = RawRequest(service.url, OPEN_PATHS[-1], 4 * 1024 * 1024, expect_continue=True, method=method,
                          headers={"content-type": "application/octet-stream"})
    try:
        assert stranger.read().status == 401
    finally:
        stranger.close()


def hold_uploads(service: ServiceProcess, identity: str, size: int, count: int) -> tuple[list[RawRequest], int]:
    """Up to `count` batch uploads of `size` bytes declared, held by `identity` with no body byte sent,
    until the service refuses one (503 busy); returns the held ones and how many were refused."""
    held, refused = [], 0
    for _ in range(count):
        upload = RawRequest(service.url, "/v1/score/batch", size, expect_continue=True, headers=binary(identity))
        reply = upload.read()
        if reply.status == 100:
            held.append(upload)
            continue
        assert reply.status == 503 and "busy" in json.loads(reply.body)["message"], reply
        upload.close()
        refused += 1
    return held, refused


def test_two_identities_flooding_the_budget_leave_a_third_served(shared_service, keys_of, mnist_test_images) -> None:
    """alice, then bob, hold as many maximal batch uploads as the service lets them: neither holds more than
    MAX_IDENTITY_SHARE of what the other leaves, and carol still uploads a batch and is scored."""
    service = shared_service
    settings = Settings()
    limit, share = settings.max_queue_bytes, settings.max_identity_share
    images = mnist_test_images[0][:64].reshape(64, -1).astype(np.int64)
    batch = keys_of["carol"].encrypt_batch(images)
    expected = scored(service, keys_of["carol"], "carol", images[0])
    wait_for_metric(service, "scoring_body_bytes_reserved", 0)
    alice, alice_refused = hold_uploads(service, "alice", len(batch), limit // len(batch) + 1)
    bob, bob_refused = hold_uploads(service, "bob", len(batch), limit // len(batch) + 1)
    try:
        assert alice_refused and bob_refused  # each was stopped by its share, not by the count of tries
        alice_bytes, bob_bytes = len(alice) * len(batch), len(bob) * len(batch)
        assert alice_bytes <= share * limit and bob_bytes <= share * (limit - alice_bytes)
        assert service.metric("scoring_body_bytes_reserved") == alice_bytes + bob_bytes
        print(f"held: alice {len(alice)} x {len(batch)} B, bob {len(bob)}; free {limit - alice_bytes - bob_bytes} B")
        # carol: a whole batch and a single image, both scored while the two others hold their uploads.
        response = httpx.post(f"{service.url}/v1/score/batch", content=batch, headers=binary("carol"),
                              timeout=GENEROUS_S)
        assert response.status_code == 200, response.text
        assert np.array_equal(keys_of["carol"].decrypt_batch(response.content)[0], expected)
        assert np.array_equal(scored(service, keys_of["carol"], "carol", images[0]), expected)
    finally:
        for upload in alice + bob:
            upload.close()
    wait_for_metric(service, "scoring_body_bytes_reserved", 0)


def test_a_stream_of_invalid_azureml_requests_is_charged(azurite: str, azureml_session, tmp_path) -> None:
    """Requests that fail the ciphertext checks cost their image like valid ones, so a stream of them
    ends in 429 as soon as the quota is spent; more ciphertexts than the model takes are refused by
    size (413) before the body is read, or by count (422) before any ciphertext is decoded."""
    body = json.loads(azureml_session.request_body(np.linspace(0, 1, 784)))
    bad = {**body, "data": [body["data"][0][:-8] + "AAAAAAA="]}  # a ciphertext whose zlib stream is cut
    two = {**body, "data": body["data"] * 2}
    sixteen = {**body, "data": body["data"] * 16}
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "RATE_LIMIT": "7/hour"}
    with running_service(env, tmp_path / "charged.log") as service:
        answers = [service.http.post("/score", json=bad) for _ in range(5)]
        assert [answer.status_code for answer in answers] == [422] * 5, [answer.text for answer in answers]
        assert "ciphertext 0 is malformed" in answers[0].json()["message"]
        too_many = service.http.post("/score", json=two)  # the sixth image
        assert too_many.status_code == 422, too_many.text
        assert "takes 1 ciphertext(s); the request has 2" in too_many.json()["message"]
        too_large = service.http.post("/score", json=sixteen)  # refused unread: no worker, no image
        assert too_large.status_code == 413, too_large.text
        assert service.http.post("/score", json=body).status_code == 200  # the seventh
        spent = service.http.post("/score", json=body)
        assert spent.status_code == 429 and spent.headers["retry-after"], spent.text


def test_a_waiting_identity_is_served_before_another_identitys_queue(azurite: str, azureml_session,
                                                                      tmp_path) -> None:
    """With the one worker held on a key lookup, alice queues three requests, then bob one (his keys under
    a blob name of their own): once storage is released, bob's keys are looked up before alice's three
    waiting requests are scored, not after them (the queue serves identities in turn)."""
    body = json.loads(azureml_session.request_body(np.linspace(0, 1, 784)))
    bob_key_id = f"{azureml_session.key_id}-bob"
    _, public_keys = azureml_session.encryptor.get_public_keys()
    BlobServiceClient.from_connection_string(azurite).get_blob_client(azureml_session.container, bob_key_id
                                                                      ).upload_blob(public_keys, overwrite=True)
    with HeldStorage(upstream=azurite) as storage:
        env = {"AZURE_STORAGE_CONNECTION_STRING": storage.connection_string(), "SCORING_ENGINE": "seal",
               "WORKER_COUNT": "1", "STORAGE_TIMEOUT_S": str(STATE_TIMEOUT_S),
               "API_KEYS": ",".join(f"{name}={key}" for name, key in IDENTITIES.items())}
        with running_service(env, tmp_path / "turns.log") as service, ThreadPoolExecutor(5) as pool:
            service.http.headers.update(bearer(IDENTITIES["alice"]))  # for its /metrics
            def post(identity: str, key_id: str) -> int:
                response = httpx.post(f"{service.url}/score", json={**body, "key_id": key_id},
                                      timeout=STATE_TIMEOUT_S, headers=bearer(IDENTITIES[identity]))
                return response.status_code

            try:
                storage.hold()
                lookups = storage.count(azureml_session.key_id)
                running = pool.submit(post, "alice", azureml_session.key_id)
                storage.wait_for(azureml_session.key_id, lookups + 1)
                queued = [pool.submit(post, "alice", azureml_session.key_id) for _ in range(3)]
                wait_for_gauge(service, "scoring_queue_depth", 3)
                queued.append(pool.submit(post, "bob", bob_key_id))
                wait_for_gauge(service, "scoring_queue_depth", 4)
            finally:
                storage.release()
            statuses = [future.result(STATE_TIMEOUT_S) for future in [running, *queued]]
            lines = list(storage.request_lines)
    assert statuses == [200] * 5
    bob_first = next(index for index, line in enumerate(lines) if bob_key_id in line)
    alice_after_bob = [line for line in lines[bob_first:] if f"/{azureml_session.key_id} " in line
                       or f"/{azureml_session.key_id}?" in line]
    assert len(alice_after_bob) >= 3, lines  # one lookup (at least) for each of alice's waiting requests
