"""Clients' public keys, downloaded from Azure Blob Storage and cached in memory.

A seed client uploads its ~8.6 MB of public keys once, as the blob `key_id`, and then names that
blob in every request. Downloading and checking them on every call (as the seed server did) costs
more than the network round trip, so checked keys are kept in an LRU cache bounded by bytes and
keyed by (blob endpoint, container, key_id).
"""

from __future__ import annotations

import hashlib
import logging
import threading

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobServiceClient
from cachetools import LRUCache

from service.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, StorageUnavailable, Unprocessable
from service.seal_format import SealFormatError, check_object_sequence
from service.settings import Settings

log = logging.getLogger(__name__)

# The seed client's key blob: GaloisKeys followed by RelinKeys.
SEED_KEY_OBJECTS = 2
# Inflated size bound of one key object (the seed's GaloisKeys inflate to about 19 MB).
MAX_INFLATED_KEY_OBJECT = 64 * 1024 * 1024
_MAX_STORAGE_CLIENTS = 16

# The Azure SDK logs every request at INFO, which is noise here and could leak SAS query strings.
logging.getLogger("azure").setLevel(logging.WARNING)


class KeyStore:
    """Fetch public-key blobs by id; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._keys: LRUCache[tuple[str, str, str], bytes] = LRUCache(maxsize=settings.key_cache_bytes, getsizeof=len)
        self._clients: LRUCache[str, BlobServiceClient] = LRUCache(maxsize=_MAX_STORAGE_CLIENTS)
        self.hits = 0
        self.misses = 0

    @property
    def cached_bytes(self) -> int:
        return int(self._keys.currsize)

    def get(self, key_id: str, container: str | None = None, conn_str: str | None = None) -> bytes:
        """The checked key bytes of blob `key_id` in `container` (defaults from the settings)."""
        container = container or self._settings.key_container
        service = self._service_client(conn_str or self._settings.azure_storage_connection_string)
        cache_key = (service.url, container, key_id)
        with self._lock:
            cached = self._keys.get(cache_key)
            if cached is not None:
                self.hits += 1
                return cached
            self.misses += 1
        keys = self._download(service, container, key_id)
        if len(keys) <= self._keys.maxsize:
            with self._lock:
                self._keys[cache_key] = keys
        return keys

    def _service_client(self, conn_str: str) -> BlobServiceClient:
        # Clients are cached by a digest so the connection string itself is never kept as a key.
        digest = hashlib.sha256(conn_str.encode()).hexdigest()
        with self._lock:
            client = self._clients.get(digest)
        if client is not None:
            return client
        try:
            client = BlobServiceClient.from_connection_string(
                conn_str,
                connection_timeout=self._settings.storage_timeout_s,
                read_timeout=self._settings.storage_timeout_s,
                retry_total=1,
            )
        except (ValueError, AzureError):
            raise BadRequest("conn_str is not a valid Azure Storage connection string") from None
        with self._lock:
            self._clients[digest] = client
        return client

    def _download(self, service: BlobServiceClient, container: str, key_id: str) -> bytes:
        limit = self._settings.max_key_bytes
        try:
            stream = service.get_blob_client(container=container, blob=key_id).download_blob(max_concurrency=1)
            if stream.size > limit:
                raise PayloadTooLarge(f"public keys '{key_id}' are {stream.size} bytes; the limit is {limit}")
            keys = stream.readall()
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
        try:
            check_object_sequence(keys, MAX_INFLATED_KEY_OBJECT, SEED_KEY_OBJECTS)
        except SealFormatError as exc:
            raise Unprocessable(f"public keys '{key_id}' are malformed: {exc}") from None
        log.info("downloaded public keys %s from container %s (%d bytes)", key_id, container, len(keys))
        return keys
