"""A crafted public-key blob costs the `seal` engine no more than the tutorial client's honest one (issue 23).

The blobs are built from the real client's keys (`crafted_keys`). Peak memory is measured with
tracemalloc (numpy's allocations are traced; deterministic, unlike time, which is not asserted).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from service.azureml.engines import ScoringEngine, create_engine
from service.azureml.seal_format import HEADER, SealFormatError, read_header
from service.azureml.seal_wire import MAX_GALOIS_OBJECT, MAX_RELIN_OBJECT, check_key_blob, read_tutorial_keys
from service.settings import Settings
from service.storage.keystore import PreparedKeys
from tests.azureml.crafted_keys import Rows, rebuilt, relin_bomb, split, unseeded, with_zero_rows

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def engine() -> ScoringEngine:
    return create_engine("seal", load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE))


def traced(engine: ScoringEngine, blob: bytes) -> tuple[int, PreparedKeys | None, str]:
    """Peak traced memory of preparing `blob`, the prepared keys (None if refused) and the refusal."""
    gc.collect()
    tracemalloc.start()
    try:
        keys, refusal = engine.prepare_keys(blob), ""
    except SealFormatError as exc:
        keys, refusal = None, str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, keys, refusal


@pytest.fixture(scope="module")
def honest(engine: ScoringEngine, seed_client) -> tuple[int, PreparedKeys]:
    _, _, public_keys = seed_client
    engine.prepare_keys(public_keys)  # once untraced: the first call's one-time allocations are not a key's cost
    peak, keys, refusal = traced(engine, public_keys)
    assert keys is not None, refusal
    return peak, keys


@pytest.mark.parametrize("craft, refusal", [
    # The finding: 73 zero rows in empty Galois slots, 8.6 MB on the wire like the honest blob.
    (lambda keys: with_zero_rows(keys, 73), "key row 0 is not one of the client's rotations"),
    # The same rows after the last honest one, so that all of the honest ones inflate first.
    (lambda keys: with_zero_rows(keys, 73, at_end=True), "is not one of the client's rotations"),
    (relin_bomb, "unexpected bytes after the SEAL object's fields"),
    (unseeded, ""),  # valid: twice the words to inflate, no seed to expand
], ids=["zero-rows", "zero-rows-at-end", "relin-bomb", "unseeded"])
def test_a_crafted_blob_costs_no_more_than_an_honest_one(engine: ScoringEngine, seed_client, honest,
                                                         craft: Callable[[bytes], bytes], refusal: str) -> None:
    honest_peak, honest_keys = honest
    _, _, public_keys = seed_client
    peak, keys, refused = traced(engine, craft(public_keys))
    if refusal:
        assert keys is None and refusal in refused, refused
    else:
        assert keys is not None and keys.nbytes == honest_keys.nbytes, refused
    assert peak <= 1.5 * honest_peak, f"{peak / MiB:.1f} MiB traced, honest {honest_peak / MiB:.1f} MiB"


def test_a_row_out_of_place_is_refused_before_the_rest_inflates(engine: ScoringEngine, seed_client) -> None:
    _, _, public_keys = seed_client
    peak, keys, refused = traced(engine, with_zero_rows(public_keys, 73))
    assert keys is None and "key row 0" in refused
    assert peak < 1 * MiB  # a chunk of the stream, not the 9.5 MB payload nor any row


def test_prepared_keys_are_the_circuits_rows_only(honest) -> None:
    _, keys = honest
    assert keys.nbytes == 12 * 3 * 2 * 4 * 8192 * 8  # 12 rotations x 3 keys x 2 polynomials x 4 primes x N words


def _first_row(rows: Rows) -> int:
    return next(index for index, row in enumerate(rows) if row)


def _two_keys(rows: Rows) -> None:
    del rows[_first_row(rows)][2]


def _wrong_key_size(rows: Rows) -> None:
    row = rows[_first_row(rows)]
    row[0] = HEADER.pack(*HEADER.unpack_from(row[0])[:-1], len(row[0]) + 8) + row[0][HEADER.size:]


def _not_ntt(rows: Rows) -> None:
    row = rows[_first_row(rows)]
    row[0] = row[0][:HEADER.size + 32] + b"\x00" + row[0][HEADER.size + 33:]


def _unexpected_row(rows: Rows) -> None:
    rows[-1] = rows[_first_row(rows)]


@pytest.mark.parametrize("mutate, slots, message", [
    (_two_keys, None, "holds 2 keys, expected 3"),
    (_wrong_key_size, None, "not what its header declares"),
    (_not_ntt, None, "a key has an unexpected shape"),
    (_unexpected_row, None, "key row 8191 is not one of the client's rotations"),
    (lambda rows: None, 8193, "8193 key rows is more than the client's keys have (8192)"),
])
def test_a_malformed_key_structure_is_refused(engine: ScoringEngine, seed_client, mutate, slots,
                                              message: str) -> None:
    _, _, public_keys = seed_client
    parms_id, rows, relin = split(public_keys)
    mutate(rows)
    with pytest.raises(SealFormatError) as error:
        engine.prepare_keys(rebuilt(parms_id, rows, relin, slots))
    assert message in str(error.value)


def test_a_truncated_stream_is_refused(seed_client) -> None:
    _, _, public_keys = seed_client
    header = read_header(public_keys)
    cut = public_keys[:header.size - 1000]
    short = HEADER.pack(*HEADER.unpack_from(cut)[:-1], len(cut)) + cut[HEADER.size:] + public_keys[header.size:]
    with pytest.raises(SealFormatError, match="truncated|shorter"):
        read_tutorial_keys(short, set())


def test_the_blob_check_bounds_what_keys_can_be(seed_client) -> None:
    _, _, public_keys = seed_client
    check_key_blob(len(public_keys), public_keys[:64])
    assert 2 * len(public_keys) < MAX_GALOIS_OBJECT + MAX_RELIN_OBJECT < Settings().max_key_bytes
    galois = read_header(public_keys).size
    with pytest.raises(SealFormatError, match="cannot be a RelinKeys object"):
        check_key_blob(galois + MAX_RELIN_OBJECT + 1, public_keys[:64])
    with pytest.raises(SealFormatError, match="cannot be a RelinKeys object"):
        check_key_blob(galois, public_keys[:64])
    declared = HEADER.pack(*HEADER.unpack_from(public_keys)[:-1], MAX_GALOIS_OBJECT + 1)
    with pytest.raises(SealFormatError, match="larger than the client's keys can be"):
        check_key_blob(MAX_GALOIS_OBJECT + 2 * HEADER.size, declared)
    with pytest.raises(SealFormatError, match="bad magic"):
        check_key_blob(len(public_keys), bytes(64))


def test_a_crafted_blob_is_refused_over_http(service, azureml_session, azurite: str) -> None:
    """Finding (a) over HTTP: the crafted blob used to be accepted (and cost 12x); now it is a 404."""
    _, honest = azureml_session.encryptor.get_public_keys()
    container = BlobServiceClient.from_connection_string(azurite).get_container_client(azureml_session.container)
    container.upload_blob("crafted-zero-rows", with_zero_rows(honest, 73, at_end=True), overwrite=True)
    body = json.loads(azureml_session.request_body(np.zeros(784)))
    response = httpx.post(f"{service.url}/score", json={**body, "key_id": "crafted-zero-rows"},
                          headers=service.headers, timeout=120)
    assert response.status_code == 404, response.text
    assert response.json() == {"message": "no usable public keys named 'crafted-zero-rows' in container "
                                          f"'{azureml_session.container}'"}
    assert "crafted-zero-rows in container public-keys are not usable: key row" in service.log()
