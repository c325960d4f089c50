"""What identities may do, over real HTTP with Azurite and a real redis-server: batch permission,
image quotas shared by two service processes through Redis, native keys owned per identity
(use, delete, quota, expiry), and the metrics that show it."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from bench.processes import ServiceProcess, free_port, running_redis, running_service
from client.scoring import ScoringClient, ScoringFailed
from service.errors import ServiceUnavailable
from service.http.auth import Identity
from service.http.metering import ImageQuota
from service.settings import Settings
from tests.expectations import served_v1_plan, v1_exact_scores
from tests.http.test_metrics_and_logs import metric_value
from tests.http.unsent_body import send_without_body, status_of
from tests.real_parts import missing_part

if shutil.which("redis-server") is None:
    missing_part("redis-server is not installed (.ci/run installs it)", whole_module=True)

KEYS = {"alice": "alice-key-1", "bob": "bob-key-1", "carol": "carol-key-1", "dave": "dave-key-1",
        "erin": "erin-key-1"}
ROTATED_ALICE_KEY = "alice-key-2"
QUOTA = 6
ZERO = np.zeros(784, dtype=np.int64)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def replicas(azurite: str, tmp_path_factory) -> Iterator[tuple[ServiceProcess, ServiceProcess, int]]:
    """Two service processes sharing Azurite and one Redis, as two replicas would; the first also
    serves /metrics on its own port."""
    metrics_port = free_port()
    api_keys = ",".join(f"{name}={key}" for name, key in KEYS.items()) + f",alice={ROTATED_ALICE_KEY}"
    with ExitStack() as stack:
        redis_uri = stack.enter_context(running_redis())
        env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "API_KEYS": api_keys,
               "BATCH_IDENTITIES": "alice", "RATE_LIMIT": f"{QUOTA}/hour;1000/day",
               "RATE_LIMIT_STORAGE_URI": redis_uri, "MAX_KEYS_PER_IDENTITY": "2", "NATIVE_KEY_REVALIDATE_S": "0"}
        folder = tmp_path_factory.mktemp("replicas")
        first = stack.enter_context(running_service({**env, "METRICS_PORT": str(metrics_port)}, folder / "a.log"))
        second = stack.enter_context(running_service(env, folder / "b.log"))
        yield first, second, metrics_port


def client(service: ServiceProcess, name: str) -> ScoringClient:
    return ScoringClient(service.url, api_key=KEYS[name])


def post(service: ServiceProcess, path: str, body: bytes, name: str) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", content=body, headers=auth(name), timeout=60)


def test_every_key_of_an_identity_works_so_keys_rotate_without_downtime(replicas) -> None:
    first, _, _ = replicas
    for key in (KEYS["alice"], ROTATED_ALICE_KEY):
        assert httpx.get(f"{first.url}/v1/model", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_an_identity_without_batch_permission_is_refused_a_batch(replicas) -> None:
    first, _, _ = replicas
    with client(first, "bob") as bob:
        response = post(first, "/v1/score/batch", bob._keys.encrypt_batch(np.zeros((2, 784), np.int64)), "bob")
    assert response.status_code == 403 and "BATCH_IDENTITIES" in response.json()["message"]
    # Decided from the headers alone: the service never receives the body of a refused batch.
    assert status_of(send_without_body(first.url, "POST", "/v1/score/batch", auth("bob"))) == 403


def test_quota_in_images_is_shared_by_two_replicas_and_other_identities_are_still_served(replicas,
                                                                                         bundled_estimator) -> None:
    first, second, _ = replicas
    with client(first, "carol") as carol, client(second, "dave") as dave:
        single = carol._keys.encrypt_single(ZERO)
        answers = [post(first if turn % 2 else second, "/v1/score", single, "carol") for turn in range(QUOTA)]
        assert [answer.status_code for answer in answers] == [200] * QUOTA
        refused = post(first, "/v1/score", single, "carol")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1 and "quota" in refused.json()["message"]
        assert post(second, "/v1/score", single, "carol").status_code == 429  # the other replica agrees
        # Refused from the headers alone: a spent identity cannot make the service receive its bodies.
        assert status_of(send_without_body(second.url, "POST", "/v1/score", auth("carol"))) == 429
        blank = np.zeros((1, 28, 28), np.uint8)
        _, scores = dave.predict(blank)  # another identity is served, and right
        np.testing.assert_array_equal(scores, v1_exact_scores(served_v1_plan(bundled_estimator), blank))


def test_a_batch_costs_the_images_it_declares(replicas, bundled_estimator) -> None:
    first, second, _ = replicas
    with client(first, "alice") as alice:
        blanks = np.zeros((4, 28, 28), np.uint8)
        _, scores = alice.predict(blanks, batch_size=4)
        np.testing.assert_array_equal(scores, v1_exact_scores(served_v1_plan(bundled_estimator), blanks))
        response = post(second, "/v1/score/batch", alice._keys.encrypt_batch(np.zeros((4, 784), np.int64)), "alice")
    assert response.status_code == 429, response.text  # 4 + 4 images > 6 per hour


def test_an_identity_can_neither_use_nor_delete_another_identitys_key(replicas) -> None:
    first, second, _ = replicas
    with client(first, "dave") as dave:
        owned = dave._keys.encrypt_single(ZERO)
        key_id = owned[16:48].hex()
        stolen = post(second, "/v1/score", owned, "bob")  # bob replays a request under dave's key
        assert stolen.status_code == 404 and "no public keys" in stolen.json()["message"]
        refused = httpx.delete(f"{second.url}/v1/keys/{key_id}", headers=auth("bob"))
        assert refused.status_code == 404
        assert post(first, "/v1/score", owned, "dave").status_code == 200
        assert httpx.delete(f"{first.url}/v1/keys/{key_id}", headers=auth("dave")).status_code == 204
        gone = post(second, "/v1/score", owned, "dave")
        assert gone.status_code == 404, gone.text
        assert httpx.delete(f"{first.url}/v1/keys/{key_id}", headers=auth("dave")).status_code == 404


def test_a_key_beyond_max_keys_per_identity_replaces_the_least_recently_stored(replicas, azurite: str) -> None:
    first, _, _ = replicas
    clients = [client(first, "erin")]  # erin's first key
    clients.append(client(first, "erin"))  # her second: MAX_KEYS_PER_IDENTITY=2
    renewed = httpx.post(f"{first.url}/v1/keys", content=clients[0]._keys.public_key, headers=auth("erin"))
    assert renewed.status_code == 201 and renewed.json()["replaced"] is None  # storing a key again costs no slot
    listed = httpx.get(f"{first.url}/v1/keys", headers=auth("erin")).json()
    assert [key["key_id"] for key in listed["keys"]] == [clients[1]._keys.key_id, clients[0]._keys.key_id]
    assert listed["max_keys"] == 2 and {key["model"] for key in listed["keys"]} == {"mnist"}
    third = ScoringClient(first.url, api_key=KEYS["erin"])  # replaces the least recently stored: the second
    listed = httpx.get(f"{first.url}/v1/keys", headers=auth("erin")).json()
    assert {key["key_id"] for key in listed["keys"]} == {clients[0]._keys.key_id, third._keys.key_id}
    clients[0].integer_scores(ZERO[None])  # still stored
    with pytest.raises(ScoringFailed, match="404.*no public keys"):
        clients[1].integer_scores(ZERO[None])
    assert httpx.delete(f"{first.url}/v1/keys/{third._keys.key_id}", headers=auth("erin")).status_code == 204
    for each in [*clients, third]:
        each.close()


def test_an_expired_key_is_refused_and_storing_it_again_renews_it(azurite: str, tmp_path) -> None:
    ttl_s = 8
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "KEY_TTL_DAYS": str(ttl_s / 86400)}
    with running_service(env, tmp_path / "ttl.log") as service, \
            ScoringClient(service.url, api_key=service.headers["Authorization"].split()[1]) as owner:
        request = owner._keys.encrypt_single(ZERO)
        blobs = BlobServiceClient.from_connection_string(azurite).get_container_client("public-keys")
        name = next(blob.name for blob in blobs.list_blobs(name_starts_with="native-v1/")
                    if blob.name.endswith(request[16:48].hex()))
        uploaded = blobs.get_blob_client(name).get_blob_properties().last_modified.timestamp()
        deadline = time.monotonic() + 120
        while (answer := service.http.post("/v1/score", content=request)).status_code == 200:
            assert time.monotonic() < deadline, "the key never expired"
            time.sleep(0.5)
        assert answer.status_code == 410 and "upload it again" in answer.json()["message"], answer.text
        assert time.time() >= uploaded + ttl_s
        assert service.http.post("/v1/keys", content=owner._keys.public_key).status_code == 201
        assert service.http.post("/v1/score", content=request).status_code == 200


def test_metrics_label_v1_routes_refusals_native_scoring_and_images_per_identity(replicas) -> None:
    """Exact increases on the first replica (one worker): alice's client stores a fresh key and scores
    one image, which is that worker's first lookup of the key (storing does not prepare it: a miss);
    two requests without credentials are refused with 401."""
    first, _, metrics_port = replicas
    scrape = f"http://127.0.0.1:{metrics_port}/metrics"  # the scrape port needs no credentials
    counted = [("scoring_http_requests_total", 'route="/v1/score",status="200"', 1),
               ("scoring_http_requests_total", 'route="/v1/keys",status="201"', 1),
               ("scoring_http_requests_total", 'route="/v1/model",status="200"', 1),
               ("scoring_http_requests_total", 'route="/v1/model",status="401"', 1),
               ("scoring_http_requests_total", 'route="/metrics",status="401"', 1),
               ("scoring_http_refusals_total", 'status="401"', 2),
               ("scoring_engine_duration_seconds_count", 'engine="native"', 1),
               ("scoring_key_cache_lookups_total", 'result="miss"', 1),
               ("scoring_key_cache_lookups_total", 'result="hit"', 0),
               ("scoring_images_total", 'identity="alice"', 1)]
    before = httpx.get(scrape).text
    with client(first, "alice") as alice:
        alice.predict(np.zeros((1, 28, 28), np.uint8))
    httpx.get(f"{first.url}/v1/model")  # a 401
    assert httpx.get(f"{first.url}/metrics").status_code == 401  # the public port still needs credentials
    text = httpx.get(scrape).text
    increases = {(name, labels): metric_value(text, name, labels, absent=0.0) - metric_value(before, name, labels,
                                                                                               absent=0.0)
                 for name, labels, _ in counted}
    assert increases == {(name, labels): expected for name, labels, expected in counted}
    assert "other" not in {line.split('identity="')[1].split('"')[0]
                           for line in text.splitlines() if line.startswith("scoring_images_total{")}


def test_unreachable_quota_counters_fail_closed_with_503() -> None:
    quota = ImageQuota(Settings(rate_limit="5/hour", rate_limit_storage_uri=f"redis://127.0.0.1:{free_port()}"))
    with pytest.raises(ServiceUnavailable, match="quota counters cannot be reached"):
        asyncio.run(quota.charge(Identity("someone", may_batch=False), 1))
