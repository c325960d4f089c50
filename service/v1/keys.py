"""Public keys of the v1 protocol, owned by the identity that stored them.

A key lives at `native-v1/<identity namespace>/<key id>` in KEY_CONTAINER of the service's own
account, its id the SHA-256 of its bytes: an identity can only name, use or delete its own keys,
and another identity's key of the same id is simply not there (404).
"""

from __future__ import annotations

from service.errors import Conflict
from service.storage.accounts import StorageAccess
from service.storage.keystore import count_live_keys, delete_key_blob, store_public_key

KEY_PREFIX = "native-v1/"


def owner_prefix(namespace: str) -> str:
    """Where one identity's keys live (`Identity.namespace`)."""
    return f"{KEY_PREFIX}{namespace}/"


def key_name(namespace: str, key_id: str) -> str:
    return owner_prefix(namespace) + key_id


def store_owned_key(storage: StorageAccess, container: str, namespace: str, key_id: str, data: bytes,
                    max_keys: int, ttl_s: float) -> None:
    """Store a key under its owner's prefix, within the owner's quota; storing it again renews it."""
    name = key_name(namespace, key_id)
    live = count_live_keys(storage, container, owner_prefix(namespace), ttl_s)
    if name not in live and len(live) >= max_keys:
        raise Conflict(f"this identity already stores {len(live)} public keys (MAX_KEYS_PER_IDENTITY); "
                       "delete one with DELETE /v1/keys/{key_id} first")
    store_public_key(storage, container, name, data)


def delete_owned_key(storage: StorageAccess, container: str, namespace: str, key_id: str) -> None:
    """Delete one of the owner's keys; 404 if there is none (including another identity's key of the same id)."""
    delete_key_blob(storage, container, key_name(namespace, key_id), key_id)
