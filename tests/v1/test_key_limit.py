"""MAX_KEYS_PER_IDENTITY under concurrency, over real HTTP with Azurite: two replicas sharing one
storage account take concurrent key uploads of one identity, and its limit holds exactly, each
upload saying which key it replaced (a per-identity lease in Blob Storage serializes them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from bench.processes import ServiceProcess, running_service
from bfv.encryption import ClientKeys
from bfv.plan import PublicPlan
from bfv.wire import key_id
from service.http.auth import Identity
from service.v1.keys import LEASE_S, lock_name

KEYS = {"alice": "alice-limit-key-1", "bob": "bob-limit-key-1"}
LIMIT = 3
UPLOADS = 12
CONTAINER = "key-limit-keys"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def replicas(azurite: str, tmp_path_factory) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Two service processes on one storage account and key container, as two replicas are."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "KEY_CONTAINER": CONTAINER,
           "API_KEYS": ",".join(f"{name}={key}" for name, key in KEYS.items()),
           "MAX_KEYS_PER_IDENTITY": str(LIMIT)}
    folder = tmp_path_factory.mktemp("key-limit")
    with ExitStack() as stack:
        yield (stack.enter_context(running_service(env, folder / "a.log")),
               stack.enter_context(running_service(env, folder / "b.log")))


@pytest.fixture(scope="module")
def public_keys(replicas) -> list[bytes]:
    """UPLOADS distinct public keys for the served model (made once: key generation costs)."""
    plan = PublicPlan.from_description(httpx.get(f"{replicas[0].url}/v1/model", headers=auth("alice")).json())
    return [ClientKeys(plan).public_key for _ in range(UPLOADS + 3)]


def listed(service: ServiceProcess, name: str) -> list[str]:
    answer = httpx.get(f"{service.url}/v1/keys", headers=auth(name), timeout=30)
    assert answer.status_code == 200, answer.text
    return [key["key_id"] for key in answer.json()["keys"]]


def test_concurrent_uploads_to_two_replicas_keep_exactly_the_limit(replicas, public_keys) -> None:
    """12 uploads of distinct keys at once, alternating between the replicas, at a limit of 3: all are
    answered 201, exactly 3 keys stay, and the 9 others are each named once as `replaced`."""
    bob_key = public_keys[-1]  # (the last two are not among the 12)
    assert httpx.post(f"{replicas[1].url}/v1/keys", content=bob_key, headers=auth("bob")).status_code == 201
    start = threading.Barrier(UPLOADS)

    def upload(turn: int) -> httpx.Response:
        start.wait()  # all at once: each upload's list, delete and store overlap the others' without the lock
        return httpx.post(f"{replicas[turn % 2].url}/v1/keys", content=public_keys[turn], headers=auth("alice"),
                          timeout=60)

    with ThreadPoolExecutor(UPLOADS) as pool:
        answers = list(pool.map(upload, range(UPLOADS)))
    assert [answer.status_code for answer in answers] == [201] * UPLOADS, [answer.text for answer in answers]
    uploaded = {answer.json()["key_id"] for answer in answers}
    replaced = [answer.json()["replaced"] for answer in answers if answer.json()["replaced"] is not None]
    stored = listed(replicas[0], "alice")
    assert len(stored) == LIMIT and set(stored) <= uploaded
    assert len(replaced) == UPLOADS - LIMIT and set(replaced) == uploaded - set(stored)  # each replaced once
    assert listed(replicas[1], "bob") == [key_id(bob_key)]  # another identity's keys are not touched
    later = httpx.post(f"{replicas[1].url}/v1/keys", content=public_keys[UPLOADS], headers=auth("alice"))
    assert later.status_code == 201 and later.json()["replaced"] == stored[0]  # the least recently stored


def test_a_lock_left_by_a_replica_that_died_delays_an_upload_until_its_lease_expires(replicas, public_keys,
                                                                                      azurite: str) -> None:
    """A replica that dies holding bob's lock (its lease taken here) leaves it for at most LEASE_S
    seconds: bob's upload waits for the lease to expire, then is stored. A time bound is the
    requirement here: the upload is answered after the lease ends, and well before a client's timeout."""
    bob_key = public_keys[-1]
    assert httpx.post(f"{replicas[1].url}/v1/keys", content=bob_key, headers=auth("bob")).status_code == 201
    lock = BlobServiceClient.from_connection_string(azurite).get_blob_client(
        CONTAINER, lock_name(Identity("bob", may_batch=False).namespace))
    lock.acquire_lease(lease_duration=LEASE_S)  # the lock blob exists: bob stored a key
    taken = time.monotonic()
    answer = httpx.post(f"{replicas[0].url}/v1/keys", content=public_keys[UPLOADS + 1], headers=auth("bob"),
                        timeout=60)
    assert answer.status_code == 201, answer.text
    assert time.monotonic() - taken >= LEASE_S - 1  # (Blob Storage may end a lease up to a second early)
    assert key_id(public_keys[UPLOADS + 1]) in listed(replicas[0], "bob")
