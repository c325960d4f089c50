"""Public keys of the v1 protocol, owned by the identity that stored them, made for one model.

A key lives at `native-v1/<identity namespace>/<model name>/<version>/<key id>` in KEY_CONTAINER of
the service's own account, its id the SHA-256 of its bytes: an identity can only name, use or
delete its own keys, another identity's key of the same id is simply not there (404), and a key
stored for one model is not found for another. An identity stores at most MAX_KEYS_PER_IDENTITY
keys, all models together; storing one more replaces its least recently stored key, so a client
that makes new keys is never locked out (a client that keeps its key renews it by storing it again).

Replicas share the storage account, so the limit is kept by Blob Storage itself: an identity's
stores run one at a time, each holding the lease of the identity's lock blob
(`native-v1/<namespace>/.lock`, no key: model names start with a letter or digit).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient

from service.errors import NotFound, ServiceUnavailable
from service.storage.accounts import StorageAccess
from service.storage.keystore import delete_key_blob, storage_errors, store_public_key

KEY_PREFIX = "native-v1/"
STORED_NS = "storedns"  # blob metadata: when the key was last stored
LOCK_BLOB = ".lock"
LEASE_S = 15  # the shortest lease Blob Storage grants: a replica that dies holding one blocks no longer
LOCK_WAIT_S = LEASE_S + 5  # outlasts a dead holder's lease; a store still waiting then is answered 503
_MAX_PAUSE_S = 0.2

log = logging.getLogger(__name__)


def owner_prefix(namespace: str) -> str:
    """Where one identity's keys live (`Identity.namespace`)."""
    return f"{KEY_PREFIX}{namespace}/"


def key_name(namespace: str, model: str, key_id: str) -> str:
    """The blob of one identity's key for `model` (`name/version`)."""
    return f"{owner_prefix(namespace)}{model}/{key_id}"


def lock_name(namespace: str) -> str:
    """The blob whose lease lets one store of the identity's keys run at a time, on every replica."""
    return f"{owner_prefix(namespace)}{LOCK_BLOB}"


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    model: str
    bytes: int
    stored: datetime
    expires: datetime
    order: int  # when it was stored, in ns: Blob Storage's times are whole seconds


    def describe(self) -> dict:
        name, _, version = self.model.rpartition("/")
        return {"key_id": self.key_id, "bytes": self.bytes, "model": name, "version": version,
                "stored": self.stored.isoformat(), "expires": self.expires.isoformat()}


def list_owned_keys(storage: StorageAccess, container: str, namespace: str, ttl_s: float) -> list[StoredKey]:
    """The identity's unexpired keys, all models, least recently stored first."""
    prefix = owner_prefix(namespace)
    keys = []
    with storage_errors(container, prefix):
        try:
            blobs = storage.own_client.get_container_client(container).list_blobs(name_starts_with=prefix,
                                                                                   include=["metadata"])
            for blob in blobs:
                if blob.name == lock_name(namespace):
                    continue
                expires = blob.last_modified + timedelta(seconds=ttl_s)
                model, _, key_id = blob.name[len(prefix):].rpartition("/")
                if expires > datetime.now(blob.last_modified.tzinfo) and model.count("/") == 1:
                    order = int((blob.metadata or {}).get(STORED_NS, "0"))
                    keys.append(StoredKey(key_id, model, blob.size, blob.last_modified, expires, order))
        except ResourceNotFoundError:  # no container yet: nobody has stored a key
            return []
    return sorted(keys, key=lambda key: (key.stored, key.order))


def store_owned_key(storage: StorageAccess, container: str, namespace: str, model: str, key_id: str,
                    data: bytes, max_keys: int, ttl_s: float) -> str | None:
    """Store (or renew) a key for `model`; at the identity's limit, its least recently stored key is
    deleted first. Returns the id of the key it replaced, if any.

    Holds the identity's lock throughout: otherwise concurrent stores (on any replica) all see room
    under the limit, or all delete the same oldest key, and store more than `max_keys`."""
    with identity_lock(storage.own_client.get_container_client(container), namespace) as lease:
        live = list_owned_keys(storage, container, namespace, ttl_s)
        _still_held(lease, container)  # the writes below get a whole lease; a list that outlasted one writes nothing
        replaced = None
        if not any(key.key_id == key_id and key.model == model for key in live) and len(live) >= max_keys:
            oldest = live[0]
            try:
                delete_key_blob(storage, container, key_name(namespace, oldest.model, oldest.key_id), oldest.key_id)
            except NotFound:  # deleted meanwhile by its owner: nothing to free
                pass
            replaced = oldest.key_id
        store_public_key(storage, container, key_name(namespace, model, key_id), data,
                         {STORED_NS: str(time.time_ns())})
    return replaced


@contextmanager
def identity_lock(container: ContainerClient, namespace: str) -> Iterator[BlobLeaseClient]:
    """Hold the lease of the identity's lock blob (made at its first store). Waits, with growing
    random pauses, while another store holds it or until a dead holder's lease expires; 503 after
    LOCK_WAIT_S. The lease is released at the end (if that fails, it expires within LEASE_S)."""
    blob = container.get_blob_client(lock_name(namespace))
    deadline, pause = time.monotonic() + LOCK_WAIT_S, 0.01
    with storage_errors(container.container_name, LOCK_BLOB):
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=LEASE_S)
                break
            except ResourceNotFoundError:  # the identity's first store (or the container's)
                _create_lock(container, blob)
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409: another store holds the lease
                    raise
                time.sleep(random.uniform(0, pause))  # jittered: waiters do not retry in step
                pause = min(2 * pause, _MAX_PAUSE_S)
            if time.monotonic() > deadline:
                raise ServiceUnavailable("other uploads of this identity's keys are in progress; try again")
    try:
        yield lease
    finally:
        try:
            lease.release()
        except AzureError as exc:
            log.warning("could not release a key-store lock (it expires within %d s): %s", LEASE_S,
                        type(exc).__name__)


def _create_lock(container: ContainerClient, blob: BlobClient) -> None:
    """Make the lock blob (and the container, the first time); another store may be making them too."""
    try:
        container.create_container()
    except HttpResponseError as exc:
        if exc.status_code != 409:  # 409: it exists
            raise
    try:
        blob.upload_blob(b"", overwrite=False)
    except HttpResponseError as exc:
        if exc.status_code not in (409, 412):  # made meanwhile (412: and already leased)
            raise


def _still_held(lease: BlobLeaseClient, container: str) -> None:
    """Renew the lease, or 503 if it expired and another store took it."""
    with storage_errors(container, LOCK_BLOB):
        try:
            lease.renew()
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise
            raise ServiceUnavailable("the key store was too slow to store this key safely; try again") from None


def delete_owned_key(storage: StorageAccess, container: str, namespace: str, model: str, key_id: str) -> None:
    """Delete one of the owner's keys for `model`; 404 if there is none (including another identity's)."""
    delete_key_blob(storage, container, key_name(namespace, model, key_id), key_id)
