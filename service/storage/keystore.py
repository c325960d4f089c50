"""Clients' public keys, downloaded from Azure Blob Storage and cached in memory, ready to use.

A client of the Azure ML contract uploads its ~8.6 MB of public keys once, as the blob `key_id`,
and then names that blob in every request. Downloading, checking and deserializing them on every
call (as the tutorial's server does) costs more than the scoring itself, so the engine's prepared
form of the keys is kept in an LRU cache bounded by bytes and keyed by (account host, account name,
container, key_id).

Blob names are not content: anyone who can write the container can replace a key under the same
name. So a cached entry remembers the blob's ETag and is revalidated with a conditional request
(`If-None-Match`) before use: 304 costs one round trip and no download, and an overwritten or
deleted key is never used stale. Stores whose names are content hashes (the v1 protocol's)
may revalidate less often (`revalidate_after_s`); a store with `ttl_s` refuses keys whose blob was
last modified longer ago than that (410), checked at every use.

Both protocols' stores in a worker share one `KeyCache`, so `KEY_CACHE_BYTES` bounds the worker,
not each protocol; key ids that were just missing or not usable are remembered briefly
(`MissingKeys`), so a client repeating an unknown id does not hold a worker for a round trip each time.

A request names the container and blob, so it could probe the storage account: which containers and
blobs exist, how large they are, what they hold. Every way a blob is not usable keys (no container, no
blob, too large, not keys) is therefore one answer, a 404 naming only what the request named; the
log keeps the reason. And no more is downloaded than keys can be: the first `FIRST_READ_BYTES`
(with the blob's size and version) are checked by the protocol's `check_blob` before the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobClient, BlobProperties, BlobServiceClient
from cachetools import LRUCache, TTLCache

from service.errors import Forbidden, Gone, NotFound, StorageUnavailable
from service.settings import Settings
from service.storage.accounts import StorageAccess

log = logging.getLogger(__name__)

# The Azure SDK logs every request at INFO, which is noise here and could leak SAS query strings.
logging.getLogger("azure").setLevel(logging.WARNING)


@dataclass(frozen=True)
class PreparedKeys:
    """A client's public keys in the form its protocol evaluates with; `nbytes` bounds the key cache."""

    value: Any
    nbytes: int


@dataclass(frozen=True)
class KeyLookup:
    keys: PreparedKeys
    cached: bool


@dataclass
class _Entry:
    """Prepared keys and the version of the blob they were made from."""

    keys: PreparedKeys
    etag: str
    last_modified: datetime
    checked_at: float = field(default_factory=time.monotonic)


CacheKey = tuple[str, str, str, str, str]  # (protocol, account host, account name, container, key id)

# The first read of a key blob: all of a small one (a v1 key, ~30 KB), the header of a large one.
FIRST_READ_BYTES = 64 * 1024
# A protocol's bound on its key blobs: given a blob's size and its first bytes, raises ValueError when
# keys of the protocol cannot be that (checked before anything more is downloaded).
BlobCheck = Callable[[int, bytes], None]


class KeyCache:
    """One LRU of prepared keys per worker, bounded by bytes (`KEY_CACHE_BYTES`), shared by both
    protocols' key stores so the bound is the worker's, not each protocol's."""

    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._keys: LRUCache[CacheKey, _Entry] = LRUCache(maxsize=max_bytes, getsizeof=lambda entry: entry.keys.nbytes)

    @property
    def nbytes(self) -> int:
        return int(self._keys.currsize)

    def get(self, key: CacheKey) -> _Entry | None:
        with self._lock:
            return self._keys.get(key)

    def put(self, key: CacheKey, entry: _Entry) -> None:
        if entry.keys.nbytes <= self._keys.maxsize:
            with self._lock:
                self._keys[key] = entry

    def evict(self, key: CacheKey) -> None:
        with self._lock:
            self._keys.pop(key, None)


class MissingKeys:
    """Key ids that were just missing or not usable, remembered `MISSING_KEY_TTL_S` seconds (bounded in
    count), so a client repeating one does not hold a worker for a storage round trip (or a download)
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

    `prepare` raises a `ValueError` (its protocol's format error) for a blob that is not keys;
    `check_blob`, when given, bounds what the protocol's blobs can be before they are downloaded.
    `protocol` names the key store in the shared `cache`, whose prepared keys differ by protocol.
    """

    def __init__(self, settings: Settings, prepare: Callable[[bytes], PreparedKeys], cache: KeyCache,
                 protocol: str, revalidate_after_s: float = 0.0, ttl_s: float | None = None,
                 check_blob: BlobCheck | None = None) -> None:
        self._settings = settings
        self._prepare, self._check_blob = prepare, check_blob
        self._revalidate_after_s, self._ttl_s = revalidate_after_s, ttl_s
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
        if cached is not None and self._still_valid(service, cached, cache_key, container, key_id):
            return KeyLookup(cached.keys, cached=True)
        self._missing.check(cache_key)
        try:
            data, properties = self._download(service.get_blob_client(container=container, blob=key_id),
                                              container, key_id)
            self._refuse_if_expired(key_id, properties.last_modified)
            keys = self._prepare(data)
        except (NotFound, ValueError) as exc:  # missing, or not keys (the protocol's format error, a size)
            raise self._unusable(cache_key, container, key_id, exc) from None
        log.info("prepared public keys %s from container %s (%d bytes downloaded, %d in memory)",
                 key_id, container, len(data), keys.nbytes)
        self._cache.put(cache_key, _Entry(keys, properties.etag, properties.last_modified))
        return KeyLookup(keys, cached=False)

    def _still_valid(self, service: BlobServiceClient, entry: _Entry, cache_key: CacheKey,
                     container: str, key_id: str) -> bool:
        """Whether a cached entry may be used: unexpired, and the blob unchanged (ETag) when due.

        False (and evicted) if the blob changed; raises if it is gone or expired. The blob's client
        is made only when it is asked (making one costs about a third of a v1 scoring)."""
        expired = self._expired(entry.last_modified)
        if not expired and time.monotonic() - entry.checked_at < self._revalidate_after_s:
            return True
        blob = service.get_blob_client(container=container, blob=key_id)
        try:
            with storage_errors(container, key_id):
                try:
                    blob.get_blob_properties(etag=entry.etag, match_condition=MatchConditions.IfModified)
                except HttpResponseError as exc:
                    if exc.status_code != 304:  # (a HEAD's 304 is not always mapped to ResourceNotModifiedError)
                        raise
                    entry.checked_at = time.monotonic()  # the cached version is the current one
                    self._refuse_if_expired(key_id, entry.last_modified)
                    return True
        except NotFound as exc:
            self._cache.evict(cache_key)
            raise self._unusable(cache_key, container, key_id, exc) from None
        self._cache.evict(cache_key)  # a new version of the blob: download and prepare it again
        return False

    def _unusable(self, cache_key: CacheKey, container: str, key_id: str, reason: Exception) -> NotFound:
        """The one answer for a blob that is missing or not keys, so requests cannot tell containers, blobs,
        sizes or contents apart; the operator's log keeps the reason."""
        detail = reason.message if isinstance(reason, NotFound) else str(reason)
        log.log(logging.INFO if isinstance(reason, NotFound) else logging.WARNING,
                "public keys %s in container %s are not usable: %s", key_id, container, detail)
        error = NotFound(f"no usable public keys named '{key_id}' in container '{container}'")
        self._missing.remember(cache_key, error)
        return error

    def _expired(self, last_modified: datetime) -> bool:
        return self._ttl_s is not None and datetime.now(timezone.utc) - last_modified > timedelta(seconds=self._ttl_s)

    def _refuse_if_expired(self, key_id: str, last_modified: datetime) -> None:
        if self._expired(last_modified):
            raise Gone(f"public key '{key_id.rsplit('/', 1)[-1]}' expired (uploaded {last_modified:%Y-%m-%d %H:%M:%S} "
                       f"UTC, KEY_TTL_DAYS={self._ttl_s / 86400:g}); upload it again")

    def _download(self, blob: BlobClient, container: str, key_id: str) -> tuple[bytes, BlobProperties]:
        """The blob's bytes, never more than its first read shows keys can be: the first `FIRST_READ_BYTES`
        give its size (and version), which `MAX_KEY_BYTES` and the protocol's `check_blob` bound; then the
        rest, of that version only. Raises ValueError for a blob that cannot be keys."""
        limit = self._settings.max_key_bytes
        with storage_errors(container, key_id):
            try:
                first = blob.download_blob(max_concurrency=1, offset=0, length=FIRST_READ_BYTES)
            except HttpResponseError as exc:
                if exc.status_code == 416:  # a range of an empty blob
                    raise ValueError("the blob is empty") from None
                raise
            properties = first.properties
            head = first.readall()
            size = int(properties.content_range.rsplit("/", 1)[1])  # the blob's, not the range's (`properties.size`)
            if size > limit:
                raise ValueError(f"{size} bytes, over MAX_KEY_BYTES={limit}")
            if self._check_blob is not None:
                self._check_blob(size, head)
            if size == len(head):
                return head, properties
            # Only the version whose first bytes were just read: the cache entry must describe these bytes.
            rest = blob.download_blob(max_concurrency=1, offset=len(head), length=size - len(head),
                                      etag=properties.etag, match_condition=MatchConditions.IfNotModified).readall()
        return head + rest, properties


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


def store_public_key(storage: StorageAccess, container: str, name: str, data: bytes,
                     metadata: dict[str, str] | None = None) -> None:
    """Write a public key into the service's own account, creating the container the first time."""
    with storage_errors(container, name):
        client = storage.own_client.get_container_client(container)
        try:
            client.create_container()
        except ResourceExistsError:
            pass
        client.upload_blob(name, data, overwrite=True, metadata=metadata)


def delete_key_blob(storage: StorageAccess, container: str, name: str, key_id: str) -> None:
    """Delete a key blob of the service's own account; 404 (naming `key_id`) if there is none."""
    with storage_errors(container, key_id):
        storage.own_client.get_blob_client(container, name).delete_blob()
