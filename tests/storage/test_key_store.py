"""The key store against a real Azurite: prepared keys are cached by id, within one byte bound per worker
shared by both protocols; unknown or unusable ids get one answer and are remembered for a short while."""

from __future__ import annotations

import logging
import os

import pytest
from azure.storage.blob import BlobServiceClient

from service.storage.keystore import FIRST_READ_BYTES, BlobCheck, PreparedKeys
from service.errors import BadRequest, Gone, NotFound
from service.storage.keystore import KeyCache, KeyStore
from service.azureml.seal_format import SealFormatError
from service.settings import Settings


def make_store(azurite: str, cache: KeyCache | None = None, protocol: str = "seed", ttl_s: float | None = None,
               check_blob: BlobCheck | None = None, **settings) -> KeyStore:
    """The one place these tests build a key store (settings over a real Azurite)."""
    settings = Settings(azure_storage_connection_string=azurite, **settings)
    return KeyStore(settings, prepare, cache or KeyCache(settings.key_cache_bytes), protocol, ttl_s=ttl_s,
                    check_blob=check_blob)


def unusable(key_id: str, container: str) -> str:
    """The one answer for every way a key blob is not usable (a regex)."""
    return f"^no usable public keys named '{key_id}' in container '{container}'$"


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
    store = make_store(azurite, key_cache_bytes=100)
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
    store = make_store(azurite)
    container.upload_blob("a", b"keys-first")
    assert store.get("a", container.container_name).keys.value == b"KEYS-FIRST"
    container.upload_blob("a", b"keys-second", overwrite=True)  # another writer of the container
    replaced = store.get("a", container.container_name)
    assert replaced.keys.value == b"KEYS-SECOND" and not replaced.cached
    assert store.get("a", container.container_name).cached


def test_a_deleted_key_is_not_served_from_the_cache(azurite: str, container) -> None:
    store = make_store(azurite)
    container.upload_blob("a", b"keys-a")
    store.get("a", container.container_name)
    container.delete_blob("a")
    with pytest.raises(NotFound, match=unusable("a", container.container_name)):
        store.get("a", container.container_name)
    assert store.cached_bytes == 0


def test_a_key_older_than_the_ttl_is_refused_with_410(azurite: str, container) -> None:
    store = make_store(azurite, ttl_s=3600)
    container.upload_blob("fresh", b"keys-fresh")
    assert store.get("fresh", container.container_name).keys.value == b"KEYS-FRESH"
    # Azurite stamps Last-Modified at upload: a store whose TTL is already over sees the same blob expired.
    expired_store = make_store(azurite, ttl_s=1e-3)
    with pytest.raises(Gone, match="'fresh' expired .* upload it again"):
        expired_store.get("fresh", container.container_name)


def test_keys_larger_than_the_cache_are_used_but_not_kept(azurite: str, container) -> None:
    store = make_store(azurite, key_cache_bytes=10)
    container.upload_blob("big", b"keys" * 10)
    assert store.get("big", container.container_name).keys.nbytes == 40
    assert store.cached_bytes == 0
    container.delete_blob("big")
    with pytest.raises(NotFound):
        store.get("big", container.container_name)


def test_every_unusable_blob_gets_one_answer_and_the_log_keeps_the_reason(azurite: str, container, caplog) -> None:
    store = make_store(azurite, max_key_bytes=1000, missing_key_ttl_s=0)
    container.upload_blob("junk", b"not keys")
    container.upload_blob("empty", b"")
    container.upload_blob("huge", b"keys" + b"\0" * 5000)
    name = container.container_name
    probes = {("junk", name): "not keys", ("empty", name): "the blob is empty", ("absent", name): "no public keys",
              ("huge", name): "5004 bytes, over MAX_KEY_BYTES=1000", ("junk", "no-such"): "container 'no-such'"}
    for (key_id, container_name), reason in probes.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="service.storage.keystore"):
            with pytest.raises(NotFound, match=unusable(key_id, container_name)):
                store.get(key_id, container_name)
        assert reason in caplog.text, caplog.text


def test_errors_name_no_credentials(azurite: str, container) -> None:
    store = make_store(azurite)
    with pytest.raises(BadRequest) as error:
        store.get("junk", container.container_name, conn_str="AccountKey=c2VjcmV0;nonsense")
    assert "c2VjcmV0" not in error.value.message


def test_default_container_comes_from_the_settings(azurite: str, container) -> None:
    store = make_store(azurite, key_container=container.container_name)
    container.upload_blob("c", b"keys-c")
    assert store.get("c").keys.value == b"KEYS-C"


def test_the_protocols_check_sees_size_and_first_bytes_before_the_rest_is_read(azurite: str, container) -> None:
    seen: list[tuple[int, bytes]] = []

    def check_blob(size: int, head: bytes) -> None:
        seen.append((size, head))
        if size > 300_000:
            raise ValueError("larger than these keys can be")

    store = make_store(azurite, check_blob=check_blob)
    body = b"keys" + os.urandom(3 * FIRST_READ_BYTES)  # read in two parts: the first bytes, then the rest
    container.upload_blob("fits", body)
    container.upload_blob("too-big", b"keys" + bytes(300_000))
    assert store.get("fits", container.container_name).keys.value == body.upper()
    assert seen == [(len(body), body[:FIRST_READ_BYTES])]
    with pytest.raises(NotFound, match=unusable("too-big", container.container_name)):
        store.get("too-big", container.container_name)


def test_both_protocols_share_one_byte_bound(azurite: str, container) -> None:
    cache = KeyCache(100)
    seed = make_store(azurite, cache, "seed")
    native = make_store(azurite, cache, "native")
    container.upload_blob("a", b"keys-a" * 10)
    container.upload_blob("b", b"keys-b" * 10)
    seed.get("a", container.container_name)
    native.get("b", container.container_name)  # 60 + 60 bytes > 100: the seed key "a" is evicted
    assert seed.cached_bytes == native.cached_bytes == 60
    assert not seed.get("a", container.container_name).cached
    assert native.get("a", container.container_name).cached is False  # same blob, other protocol: its own entry


def test_unknown_key_ids_are_remembered_for_missing_key_ttl(azurite: str, container) -> None:
    remembering = make_store(azurite, missing_key_ttl_s=600)
    forgetting = make_store(azurite, missing_key_ttl_s=0)
    for store in (remembering, forgetting):
        with pytest.raises(NotFound, match=unusable("late", container.container_name)):
            store.get("late", container.container_name)
    container.upload_blob("late", b"keys-late")
    with pytest.raises(NotFound, match=unusable("late", container.container_name)):  # without asking storage
        remembering.get("late", container.container_name)
    assert forgetting.get("late", container.container_name).keys.value == b"KEYS-LATE"
