"""The key store against a real Azurite: prepared keys are cached by id, within a byte bound."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

from service.engines import PreparedKeys
from service.errors import BadRequest, Gone, NotFound, PayloadTooLarge, Unprocessable
from service.keystore import KeyStore
from service.seal_format import SealFormatError
from service.settings import Settings


def prepare(blob: bytes) -> PreparedKeys:
    if not blob.startswith(b"keys"):
        raise SealFormatError("not keys")
    return PreparedKeys(value=blob.upper(), nbytes=len(blob))


@pytest.fixture()
def container(azurite: str, request: pytest.FixtureRequest):
    name = f"ks-{abs(hash(request.node.name)) % 10**8}"
    client = BlobServiceClient.from_connection_string(azurite).get_container_client(name)
    client.create_container()
    yield client
    client.delete_container()


def test_prepared_keys_are_cached_until_evicted(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite, key_cache_bytes=100), prepare)
    container.upload_blob("a", b"keys-a" * 10)
    container.upload_blob("b", b"keys-b" * 10)
    first = store.get("a", container.container_name)
    assert first.keys.value == b"KEYS-A" * 10 and not first.cached
    assert store.cached_bytes == 60
    again = store.get("a", container.container_name)  # unchanged blob (ETag): served from the cache
    assert again.cached and again.keys is first.keys
    store.get("b", container.container_name)  # 60 + 60 bytes > 100: "a" is evicted
    assert not store.get("a", container.container_name).cached


def test_an_overwritten_key_is_never_used_stale(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite), prepare)
    container.upload_blob("a", b"keys-first")
    assert store.get("a", container.container_name).keys.value == b"KEYS-FIRST"
    container.upload_blob("a", b"keys-second", overwrite=True)  # another writer of the container
    replaced = store.get("a", container.container_name)
    assert replaced.keys.value == b"KEYS-SECOND" and not replaced.cached
    assert store.get("a", container.container_name).cached


def test_a_deleted_key_is_not_served_from_the_cache(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite), prepare)
    container.upload_blob("a", b"keys-a")
    store.get("a", container.container_name)
    container.delete_blob("a")
    with pytest.raises(NotFound, match="no public keys named 'a'"):
        store.get("a", container.container_name)
    assert store.cached_bytes == 0


def test_a_key_older_than_the_ttl_is_refused_with_410(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite), prepare, ttl_s=3600)
    container.upload_blob("fresh", b"keys-fresh")
    assert store.get("fresh", container.container_name).keys.value == b"KEYS-FRESH"
    # Azurite stamps Last-Modified at upload: a store whose TTL is already over sees the same blob expired.
    expired_store = KeyStore(Settings(azure_storage_connection_string=azurite), prepare, ttl_s=1e-3)
    with pytest.raises(Gone, match="'fresh' expired .* upload it again"):
        expired_store.get("fresh", container.container_name)


def test_keys_larger_than_the_cache_are_used_but_not_kept(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite, key_cache_bytes=10), prepare)
    container.upload_blob("big", b"keys" * 10)
    assert store.get("big", container.container_name).keys.nbytes == 40
    assert store.cached_bytes == 0
    container.delete_blob("big")
    with pytest.raises(NotFound):
        store.get("big", container.container_name)


def test_errors_name_what_is_wrong_without_credentials(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite), prepare)
    container.upload_blob("junk", b"not keys")
    with pytest.raises(Unprocessable, match="'junk' are malformed: not keys"):
        store.get("junk", container.container_name)
    with pytest.raises(NotFound, match="container 'no-such' does not exist"):
        store.get("junk", "no-such")
    with pytest.raises(BadRequest) as error:
        store.get("junk", container.container_name, conn_str="AccountKey=c2VjcmV0;nonsense")
    assert "c2VjcmV0" not in error.value.message


def test_default_container_comes_from_the_settings(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite, key_container=container.container_name),
                     prepare)
    container.upload_blob("c", b"keys-c")
    assert store.get("c").keys.value == b"KEYS-C"


def test_key_blobs_over_the_size_limit_are_refused_before_download(azurite: str, container) -> None:
    store = KeyStore(Settings(azure_storage_connection_string=azurite, max_key_bytes=1000), prepare)
    container.upload_blob("huge", b"keys" + b"\0" * 5000)
    with pytest.raises(PayloadTooLarge, match="5004 bytes; the limit is 1000"):
        store.get("huge", container.container_name)
