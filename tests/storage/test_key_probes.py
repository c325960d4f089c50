"""Over real HTTP: a request's `container` and `key_id` cannot probe the storage account (issue 23).

A missing container, a missing blob, a blob that is not keys and blobs too large to be keys all get one
answer (404, the same JSON but for the names the request gave), the operator's log keeps each reason,
and a probe downloads no more than the first read of a blob. The service reads storage through
`HeldStorage`, which relays to Azurite and counts the bytes it relays.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from bench.processes import GENEROUS_SCORING_TIMEOUT_MS, TEST_API_KEY, ServiceProcess, running_service
from service.azureml.seal_format import HEADER, read_header
from service.azureml.seal_wire import MAX_GALOIS_OBJECT
from service.storage.keystore import FIRST_READ_BYTES
from tests.azureml.crafted_keys import with_zero_rows
from tests.held_storage import HeldStorage

MiB = 1024 * 1024
MAX_KEY_BYTES = 12 * MiB  # above the honest 8.6 MB, so that a blob over it stays cheap to upload
CONTAINER = "probe-keys"
HTTP_SLACK = 8 * 1024  # response headers of the (at most two) storage reads of a probe


@pytest.fixture(scope="module")
def relayed(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, HeldStorage]]:
    with HeldStorage(upstream=azurite) as storage:
        storage.release()  # relay every request at once: the test counts bytes, it holds nothing
        env = {"AZURE_STORAGE_CONNECTION_STRING": storage.connection_string(), "WORKER_COUNT": "1",
               "MAX_KEY_BYTES": str(MAX_KEY_BYTES), "SCORING_TIMEOUT_MS": str(GENEROUS_SCORING_TIMEOUT_MS)}
        with running_service(env, tmp_path_factory.mktemp("probes") / "service.log") as service:
            yield service, storage


@pytest.fixture(scope="module")
def session(relayed, azurite: str) -> Iterator[object]:
    """The tutorial's client, its honest keys uploaded straight to Azurite (the service reads them via the relay)."""
    from client.azureml import AzureMLSession

    service, _ = relayed
    with AzureMLSession(url=service.url, conn_str=azurite, container=CONTAINER, api_key=TEST_API_KEY,
                        send_conn_str=False) as client:
        yield client


def blobs(honest: bytes) -> dict[str, bytes]:
    """Blobs that are not usable keys, by name, each a way to probe."""
    galois = read_header(honest).size
    inflated = HEADER.pack(*HEADER.unpack_from(honest)[:-1], MAX_GALOIS_OBJECT + 1)
    return {
        "junk": os.urandom(MiB),  # not a SEAL object
        "over-max-key-bytes": honest + bytes(MAX_KEY_BYTES + 1 - len(honest)),
        "too-big-for-relin-keys": honest[:galois] + honest[galois:] + bytes(2 * MiB),
        "galois-declared-too-big": inflated + honest[HEADER.size:],
    }


def probe(service: ServiceProcess, body: dict, key_id: str, container: str) -> httpx.Response:
    return httpx.post(f"{service.url}/score", json={**body, "key_id": key_id, "container": container},
                      headers=service.headers, timeout=120)


def test_probes_get_one_answer_and_download_at_most_a_first_read(relayed, session, azurite: str) -> None:
    service, storage = relayed
    _, honest = session.encryptor.get_public_keys()
    container = BlobServiceClient.from_connection_string(azurite).get_container_client(CONTAINER)
    for name, data in blobs(honest).items():
        container.upload_blob(name, data, overwrite=True)
    body = json.loads(session.request_body(np.zeros(784)))
    probes = {("junk", CONTAINER): "not a SEAL object",
              ("over-max-key-bytes", CONTAINER): f"{MAX_KEY_BYTES + 1} bytes, over MAX_KEY_BYTES={MAX_KEY_BYTES}",
              ("too-big-for-relin-keys", CONTAINER): "cannot be a RelinKeys object",
              ("galois-declared-too-big", CONTAINER): "larger than the client's keys can be",
              ("absent", CONTAINER): "no public keys named 'absent'",
              ("absent", "no-such-container"): "container 'no-such-container' does not exist"}
    answers = set()
    for (key_id, container_name), reason in probes.items():
        before = storage.relayed_bytes
        response = probe(service, body, key_id, container_name)
        downloaded = storage.relayed_bytes - before
        assert response.status_code == 404, response.text
        answers.add((response.headers["content-type"],
                     response.content.replace(key_id.encode(), b"<key>").replace(container_name.encode(), b"<c>")))
        assert downloaded <= FIRST_READ_BYTES + HTTP_SLACK, f"{key_id}: {downloaded} bytes from storage"
        logged = rf"public keys {key_id} in container {container_name} are not usable: [^\n]*{re.escape(reason)}"
        assert re.search(logged, service.log()), f"{key_id}: the log does not say {reason!r}"
    one_answer = b'{"message":"no usable public keys named \'<key>\' in container \'<c>\'"}'
    assert answers == {("application/json", one_answer)}


def test_a_key_is_downloaded_once_and_only_its_size(relayed, session, azurite: str) -> None:
    """The honest keys still score, read in two parts that add up to the blob; a blob whose size is
    plausible but whose content is crafted costs one download of its size, then the same 404."""
    service, storage = relayed
    before = storage.relayed_bytes
    assert len(session.scores(np.linspace(0, 1, 784))) == 10
    assert session.key_bytes <= storage.relayed_bytes - before <= session.key_bytes + HTTP_SLACK
    _, honest = session.encryptor.get_public_keys()
    crafted = with_zero_rows(honest, 73, at_end=True)
    BlobServiceClient.from_connection_string(azurite).get_blob_client(CONTAINER, "crafted").upload_blob(crafted)
    before = storage.relayed_bytes
    response = probe(service, json.loads(session.request_body(np.zeros(784))), "crafted", CONTAINER)
    assert response.status_code == 404 and "no usable public keys named 'crafted'" in response.text
    assert len(crafted) <= storage.relayed_bytes - before <= len(crafted) + HTTP_SLACK
