"""Public keys of the v1 protocol, owned by the identity that stored them, made for one model.

A key lives at `native-v1/<identity namespace>/<model name>/<version>/<key id>` in KEY_CONTAINER of
the service's own account, its id the SHA-256 of its bytes: an identity can only name, use or
delete its own keys, another identity's key of the same id is simply not there (404), and a key
stored for one model is not found for another. An identity stores at most MAX_KEYS_PER_IDENTITY
keys, all models together; storing one more replaces its least recently stored key, so a client
that makes new keys is never locked out (a client that keeps its key renews it by storing it again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError

from service.errors import NotFound
from service.storage.accounts import StorageAccess
from service.storage.keystore import delete_key_blob, storage_errors, store_public_key

KEY_PREFIX = "native-v1/"
STORED_NS = "storedns"  # blob metadata: when the key was last stored


def owner_prefix(namespace: str) -> str:
    """Where one identity's keys live (`Identity.namespace`)."""
    return f"{KEY_PREFIX}{namespace}/"


def key_name(namespace: str, model: str, key_id: str) -> str:
    """The blob of one identity's key for `model` (`name/version`)."""
    return f"{owner_prefix(namespace)}{model}/{key_id}"


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
    deleted first. Returns the id of the key it replaced, if any."""
    live = list_owned_keys(storage, container, namespace, ttl_s)
    replaced = None
    if not any(key.key_id == key_id and key.model == model for key in live) and len(live) >= max_keys:
        oldest = live[0]
        try:
            delete_key_blob(storage, container, key_name(namespace, oldest.model, oldest.key_id), oldest.key_id)
        except NotFound:  # gone meanwhile (deleted, or replaced by a concurrent store): nothing to free
            pass
        replaced = oldest.key_id
    store_public_key(storage, container, key_name(namespace, model, key_id), data, {STORED_NS: str(time.time_ns())})
    return replaced


def delete_owned_key(storage: StorageAccess, container: str, namespace: str, model: str, key_id: str) -> None:
    """Delete one of the owner's keys for `model`; 404 if there is none (including another identity's)."""
    delete_key_blob(storage, container, key_name(namespace, model, key_id), key_id)
