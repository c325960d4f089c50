"""Clients' public keys, downloaded from Azure Blob Storage and cached in memory, ready to use.

A seed client uploads its ~8.6 MB of public keys once, as the blob `key_id`, and then names that
blob in every request. Downloading, checking and deserializing them on every call (as the seed
server did) costs more than the scoring itself, so the engine's prepared form of the keys is kept
in an LRU cache bounded by bytes and keyed by (account host, account name, container, key_id).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobServiceClient
from cachetools import LRUCache, TTLCache

from service.engines import PreparedKeys
from service.errors import Forbidden, NotFound, PayloadTooLarge, StorageUnavailable, Unprocessable
from service.seal_format import SealFormatError
from service.settings import Settings
from service.storage import StorageAccess

log = logging.getLogger(__name__)

# The Azure SDK logs every request at INFO, which is noise here and could leak SAS query strings.
logging.getLogger("azure").setLevel(logging.WARNING)


@dataclass(frozen=True)
class KeyLookup:
    keys: PreparedKeys
    cached: bool


CacheKey = tuple[str, str, str, str, str]  # (protocol, account host, account name, container, key id)


class KeyCache:
    """One LRU of prepared keys per worker, bounded by bytes (`KEY_CACHE_BYTES`), shared by both
    protocols' key stores so the bound is the worker's, not each protocol's."""

    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._keys: LRUCache[CacheKey, PreparedKeys] = LRUCache(maxsize=max_bytes, getsizeof=lambda k: k.nbytes)

    @property
    def nbytes(self) -> int:
        return int(self._keys.currsize)

    def get(self, key: CacheKey) -> PreparedKeys | None:
        with self._lock:
            return self._keys.get(key)

    def put(self, key: CacheKey, keys: PreparedKeys) -> None:
        if keys.nbytes <= self._keys.maxsize:
            with self._lock:
                self._keys[key] = keys


class MissingKeys:
    """Key ids storage just said do not exist, remembered `MISSING_KEY_TTL_S` seconds (bounded in
    count), so a client repeating an unknown id does not hold a worker for a storage round trip
    each time. Short, because a key may be uploaded right after."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float) -> None:
        self._lock = threading.Lock()
        self._missing: TTLCache[CacheKey, str] | None = (
            TTLCache(maxsize=self.MAX_ENTRIES, ttl=ttl_s) if ttl_s > 0 else None)

    def check(self, key: CacheKey) -> None:
        """Raise the remembered 404 for `key`, if any."""
        if self._missing is not None:
            with self._lock:
                message = self._missing.get(key)
            if message is not None:
                raise NotFound(message)

    def remember(self, key: CacheKey, error: NotFound) -> None:
        if self._missing is not None:
            with self._lock:
                self._missing[key] = error.message


class KeyStore:
    """Fetch public-key blobs by id and prepare them with `prepare`; safe to share between threads.

    `protocol` names the key store in the shared `cache`, whose prepared keys differ by protocol.
    """

    def __init__(self, settings: Settings, prepare: Callable[[bytes], PreparedKeys], cache: KeyCache,
                 protocol: str) -> None:
        self._settings = settings
        self._prepare = prepare
        self._cache, self._protocol = cache, protocol
        self._missing = MissingKeys(settings.missing_key_ttl_s)
        self._storage = StorageAccess(settings)

    @property
    def cached_bytes(self) -> int:
        return self._cache.nbytes

    def get(self, key_id: str, container: str | None = None, conn_str: str | None = None) -> KeyLookup:
        """The prepared keys of blob `key_id` in `container` (defaults from the settings).

        `conn_str` only selects an allowed account (see `StorageAccess`); it is never connected to.
        """
        container = container or self._settings.key_container
        service = self._storage.client_for(conn_str)
        cache_key = (self._protocol, service.primary_hostname, service.account_name or "", container, key_id)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return KeyLookup(cached, cached=True)
        self._missing.check(cache_key)
        try:
            blob = self._download(service, container, key_id)
        except NotFound as exc:
            self._missing.remember(cache_key, exc)
            raise
        try:
            keys = self._prepare(blob)
        except SealFormatError as exc:
            raise Unprocessable(f"public keys '{key_id}' are malformed: {exc}") from None
        log.info("prepared public keys %s from container %s (%d bytes downloaded, %d in memory)",
                 key_id, container, len(blob), keys.nbytes)
        self._cache.put(cache_key, keys)
        return KeyLookup(keys, cached=False)

    def _download(self, service: BlobServiceClient, container: str, key_id: str) -> bytes:
        limit = self._settings.max_key_bytes
        with storage_errors(container, key_id):
            blob = service.get_blob_client(container=container, blob=key_id)
            size = blob.get_blob_properties().size  # checked before any byte of the blob is fetched
            if size > limit:
                raise PayloadTooLarge(f"public keys '{key_id}' are {size} bytes; the limit is {limit}")
            keys = blob.download_blob(max_concurrency=1, offset=0, length=limit + 1).readall()
            if len(keys) > limit:
                raise PayloadTooLarge(f"public keys '{key_id}' grew past the limit of {limit} bytes")
        return keys


@contextmanager
def storage_errors(container: str, key_id: str) -> Iterator[None]:
    """Turn the Blob SDK's exceptions into `ScoringError`s whose messages name no credential."""
    try:
        yield
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise NotFound(f"container '{container}' does not exist") from None
        raise NotFound(f"no public keys named '{key_id}' in container '{container}'") from None
    except ClientAuthenticationError:
        raise Forbidden("the storage account refused the credentials") from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise Forbidden("the storage account refused access to the public keys") from None
        raise StorageUnavailable(f"the key store answered {exc.status_code}") from None
    except (ServiceRequestError, AzureError):
        raise StorageUnavailable("the key store cannot be reached") from None


def store_public_key(storage: StorageAccess, container: str, name: str, data: bytes) -> None:
    """Write a public key into the service's own account, creating the container the first time."""
    with storage_errors(container, name):
        client = storage.own_client.get_container_client(container)
        try:
            client.create_container()
        except ResourceExistsError:
            pass
        client.upload_blob(name, data, overwrite=True)
