"""The compiled loops (bfv/_kernels.c) against their numpy references, bit for bit.

Each kernel is compared on random inputs (hypothesis) with the numpy code it replaces; then whole
single-image and batch replies are computed twice from the same randomness, once with the compiled
loops and once with numpy alone, and must be the same bytes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bfv import bitpack, kernels, ring
from model.loading import linear_model_from_estimator
from bfv.inputs import InputEncoding
from bfv.encryption import ClientKeys
from bfv.evaluation import Evaluator
from bfv.ntt import NttTables, transform
from bfv.params import ring_parameters
from bfv.seal_ring import SealRing
from bfv.plan import build_plan
from bfv.wire import Kind, read_request
from tests.real_parts import missing_part

if not kernels.AVAILABLE:
    missing_part(f"no compiled loops to compare: {kernels.STATUS}", whole_module=True)

PROJECT_ROOT = Path(__file__).resolve().parents[2]

PRIMES = (1152921504606830593, 1152921504606748673)  # the flooded profile's two 60-bit data primes
_U64 = np.uint64


def _words(data: bytes) -> np.ndarray:
    return np.frombuffer(data[: len(data) // 8 * 8], dtype=np.uint64)


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 64), data=st.binary(max_size=8 * 70))
@example(width=36, data=bytes(range(256)) * 3)
@example(width=60, data=b"\xff" * 8 * 33)
def test_pack_and_unpack_match_numpy(width: int, data: bytes) -> None:
    values = _words(data) & (_U64(2**width - 1) if width < 64 else _U64(2**64 - 1))
    packed = kernels.pack(values, width)
    assert bytes(packed) == bitpack.numpy_pack(values, width)
    assert (kernels.unpack(packed, values.size, width) == values).all()
    assert kernels.pack(values, width, prefix=b"head")[:4] == b"head"


@settings(max_examples=300, deadline=None)
@given(bits=st.integers(1, 52),
       fractions=st.lists(st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False), max_size=40))
@example(bits=36, fractions=[0.5 / 2**36, 1.5 / 2**36, 2.5 / 2**36, -0.5 / 2**36, 1.0, 1.9999999999999998])
def test_switched_fractions_match_numpy(bits: int, fractions: list[float]) -> None:
    """Rounding half to even included: the halfway cases above are exact in float64."""
    values = np.array(fractions, dtype=np.float64)
    expected = bitpack.numpy_pack(ring.fraction_to_power_of_two(values, bits), bits)
    assert bytes(kernels.pack_fractions(values, bits)) == expected


@settings(max_examples=200, deadline=None)
@given(random=st.binary(max_size=600), room=st.integers(0, 700))
def test_ternary_matches_numpy(random: bytes, room: int) -> None:
    assert (kernels.ternary(random, room) == ring.numpy_ternary(random, room)).all()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=8 * 64), eta=st.integers(1, 32))
def test_centred_binomial_matches_numpy(data: bytes, eta: int) -> None:
    words = _words(data)
    assert (kernels.centred_binomial(words, eta) == ring.numpy_centred_binomial(words, eta)).all()


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-(2**62) + 1, 2**62 - 1) | st.integers(-3, 3), min_size=1, max_size=48),
       rows=st.sampled_from([1, 2, 3]), primes=st.sampled_from([PRIMES[:1], PRIMES, (97, 65537, 2**31 - 1)]))
def test_signed_residues_match_numpy(values: list[int], rows: int, primes: tuple[int, ...]) -> None:
    array = np.array(values * rows, dtype=np.int64).reshape(rows, len(values))
    assert (kernels.signed_residues(array, primes) == ring.numpy_from_signed(array, primes)).all()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=8, max_size=8 * 64), bits=st.integers(1, 30))
def test_limbs_match_numpy(data: bytes, bits: int) -> None:
    residues = _words(data) >> _U64(4)  # below 2^60, as every residue is
    limbs = ring.split_limbs(residues, bits)
    assert limbs.dtype == np.float64 and (limbs == ring.numpy_split_limbs(residues, bits)).all()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 3), degree=st.sampled_from([1, 7, 64]),
       primes=st.sampled_from([PRIMES[:1], PRIMES, (97, 65537)]))
def test_added_errors_match_numpy(seed: int, rows: int, degree: int, primes: tuple[int, ...]) -> None:
    generator = np.random.default_rng(seed)
    residues = np.stack([generator.integers(0, prime, (rows, degree), dtype=np.uint64) for prime in primes], axis=1)
    residues[..., 0] = 0  # the edges, where an error wraps around the modulus
    residues[..., -1] = np.array(primes, dtype=np.uint64)[None, :] - np.uint64(1)
    words = generator.integers(0, 2**64, (rows, degree), dtype=np.uint64)
    expected = ring.add_small(residues, ring.numpy_centred_binomial(words, ring.ERROR_ETA), primes)
    kernels.add_centred_binomial(residues, words, ring.ERROR_ETA, primes)
    assert (residues == expected).all()


def _schoolbook_at(small: np.ndarray, residues: np.ndarray, positions: np.ndarray, prime: int) -> list[int]:
    """Coefficients of small * residues in Z_p[X]/(X^N + 1), from the definition, in Python integers."""
    degree = small.size
    product = [0] * degree
    for i, a in enumerate(small.tolist()):
        for j, b in enumerate(residues.tolist()):
            sign, place = (1, i + j) if i + j < degree else (-1, i + j - degree)
            product[place] += sign * a * b
    return [product[position] % prime for position in positions.tolist()]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), degree=st.sampled_from([1, 2, 8, 64, 4096]), small_bits=st.integers(1, 21),
       count=st.integers(1, 6), prime=st.sampled_from(PRIMES))
def test_negacyclic_coefficients_match_numpy(seed: int, degree: int, small_bits: int, count: int, prime: int) -> None:
    generator = np.random.default_rng(seed)
    bound = min(2**small_bits, 2**33 // degree)  # what both the kernel and numpy's limbs sum exactly
    small = generator.integers(-bound + 1, bound, degree)
    residues = generator.integers(0, prime, (1, degree), dtype=np.uint64)
    positions = generator.integers(0, degree, count)
    compiled = ring.negacyclic_at(small, residues, positions, (prime,), small_bits)
    assert (compiled == ring.numpy_negacyclic_at(small, residues, positions, (prime,), small_bits)).all()
    if degree <= 64:
        assert compiled[0].tolist() == _schoolbook_at(small, residues[0], positions, prime)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), terms=st.integers(1, 9), degree=st.sampled_from([1, 3, 64, 4096]),
       prime=st.sampled_from(PRIMES + (268369921, 2**61 - 1)))
def test_dot_products_modulo_a_prime_match_numpy(seed: int, terms: int, degree: int, prime: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, prime, (terms, degree), dtype=np.uint64)
    w = rng.integers(0, prime, (terms, degree), dtype=np.uint64)
    x[:, 0], w[:, 0] = prime - 1, prime - 1  # the largest residues, where the 128-bit sums come closest to 2^128
    compiled = kernels.dot_mod(x[1:], w[1:], (x[0], w[0]), prime)
    assert (compiled == ring.numpy_dot_mod(x, w, prime)).all()
    expected = [sum(int(a) * int(b) for a, b in zip(x[:, i], w[:, i])) % prime for i in range(min(degree, 5))]
    assert compiled[: len(expected)].tolist() == expected


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), degree=st.sampled_from([1, 5, 4096]),
       prime=st.sampled_from(PRIMES + (268369921, 2**61 - 1)))
def test_elementwise_products_modulo_a_prime_match_numpy(seed: int, degree: int, prime: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, prime, (3, degree), dtype=np.uint64)
    w = rng.integers(0, prime, degree, dtype=np.uint64)
    x[0, 0], w[-1] = prime - 1, prime - 1
    compiled = kernels.multiply_mod(x, w, kernels.shoup_quotients(w, prime), prime)
    assert (compiled == ring.mul_mod(x, w, prime)).all()
    assert compiled[0, 0] == (prime - 1) * int(w[0]) % prime


@pytest.mark.parametrize("profile", ["compact", "flooded"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5))
def test_transforms_are_seals(profile: str, seed: int, rows: int) -> None:
    """The compiled NTTs give, bit for bit, what SEAL's transforms give, both ways, on every data prime."""
    seal_ring = SealRing(ring_parameters(profile, 25))
    assert seal_ring.compiled_transforms  # the tables matched SEAL's transform of X
    primes = seal_ring.params.data_primes
    rng = np.random.default_rng(seed)
    polys = np.stack([rng.integers(0, prime, (2 * rows, seal_ring.params.degree), dtype=np.uint64)
                      for prime in primes], axis=1)
    polys[0, :, 0] = [prime - 1 for prime in primes]
    for start in range(0, 2 * rows, 2):
        pair = polys[start : start + 2]
        assert (seal_ring.ntt_rows(pair) == seal_ring.polys(seal_ring.to_ntt(pair))).all()
        assert (seal_ring.ntt_rows(pair, inverse=True) ==
                seal_ring.from_ntt(seal_ring.ciphertext(pair, ntt_form=True))).all()
    assert (seal_ring.ntt_rows(seal_ring.ntt_rows(polys), inverse=True) == polys).all()


def test_dot_products_refuse_what_128_bits_cannot_sum() -> None:
    prime = 2**61 - 1
    ones = np.ones((64, 1), dtype=np.uint64)  # 65 p^2 > 2^128 > 63 p^2
    assert kernels.dot_mod(ones[:62], ones[:62], (ones[0], ones[0]), prime).tolist() == [63]
    with pytest.raises(ValueError, match="2\\^128"):
        kernels.dot_mod(ones, ones, (ones[0], ones[0]), prime)


def _odd_powers(psi: int, degree: int, prime: int) -> np.ndarray:
    """What SEAL's transform of X is for the root psi: psi^(2 bitrev(i) + 1) at i."""
    bits = degree.bit_length() - 1
    return np.array([pow(psi, 2 * int(format(i, f"0{bits}b")[::-1], 2) + 1, prime) for i in range(degree)],
                    dtype=np.uint64)


@pytest.mark.parametrize("prime", [12289, 4611686018427365377])  # 14 bits, and a 62-bit prime = 1 mod 32
def test_transforms_multiply_negacyclically_up_to_62_bit_primes(prime: int) -> None:
    """Independently of SEAL: forward, pointwise product, inverse is the schoolbook negacyclic product."""
    degree = 16
    generator = next(g for g in range(2, prime) if pow(g, (prime - 1) // 2, prime) != 1)
    psi = pow(generator, (prime - 1) // (2 * degree), prime)
    tables = NttTables.matching(prime, _odd_powers(psi, degree, prime))
    assert tables is not None
    rng = np.random.default_rng(prime % 1000)
    x, y = (rng.integers(0, prime, (1, 1, degree), dtype=np.uint64) for _ in range(2))
    x[0, 0, 0] = prime - 1
    product = transform(ring.mul_mod(transform(x, [tables]), transform(y, [tables]), prime), [tables], inverse=True)
    expected = [0] * degree
    for i in range(degree):
        for j in range(degree):
            sign = 1 if i + j < degree else -1
            expected[(i + j) % degree] = (expected[(i + j) % degree] + sign * int(x[0, 0, i]) * int(y[0, 0, j])) % prime
    assert product[0, 0].tolist() == expected
    assert (transform(transform(x, [tables]), [tables], inverse=True) == x).all()


def test_tables_that_do_not_match_seal_are_not_used() -> None:
    prime, degree = 12289, 16
    psi = pow(11, (prime - 1) // (2 * degree), prime)
    transformed = _odd_powers(psi, degree, prime)
    assert NttTables.matching(prime, transformed) is not None
    swapped = transformed.copy()
    swapped[[1, 2]] = swapped[[2, 1]]  # SEAL's order differs: another butterfly order
    assert NttTables.matching(prime, swapped) is None
    assert NttTables.matching(prime, np.full(degree, psi, dtype=np.uint64)) is None


def test_transforms_refuse_what_they_cannot_take() -> None:
    tables = NttTables.matching(12289, _odd_powers(pow(11, 12288 // 32, 12289), 16, 12289))
    polys = np.zeros((2, 16), dtype=np.uint64)
    degree_6, degree_1 = np.zeros((2, 6), dtype=np.uint64), np.zeros((2, 1), dtype=np.uint64)
    strided = np.zeros((2, 32), dtype=np.uint64)[:, ::2]
    for bad in (degree_6, degree_1, polys.astype(np.int64), strided):
        with pytest.raises(ValueError, match="contiguous uint64 rows of a power-of-two degree"):
            kernels.ntt(bad, 12289, tables.roots[: bad.shape[-1]], tables.roots_shoup[: bad.shape[-1]])
    with pytest.raises(ValueError, match="tables of that size"):
        kernels.ntt(polys, 12289, tables.roots[:8], tables.roots_shoup[:8])
    with pytest.raises(ValueError, match="for 1 primes"):
        transform(np.zeros((2, 2, 16), dtype=np.uint64), [tables])


def test_negacyclic_coefficients_refuse_what_64_bits_cannot_sum() -> None:
    residues = np.zeros(4096, dtype=np.uint64)
    with pytest.raises(ValueError, match="too large"):
        kernels.negacyclic_at(np.full(4096, 2**21), residues, np.array([0]), PRIMES[0])
    with pytest.raises(ValueError, match="positions outside"):
        kernels.negacyclic_at(np.ones(4096, dtype=np.int64), residues, np.array([4096]), PRIMES[0])


class _Repeatable:
    """ring.random_bytes from a fixed seed, restartable, so that two runs draw the same randomness."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._generator = np.random.default_rng(20261130)

    def __call__(self, count: int) -> bytes:
        return self._generator.bytes(count)


@pytest.mark.parametrize("profile", ["compact", "flooded"])
def test_replies_are_the_same_bytes_with_and_without_the_compiled_loops(monkeypatch, bundled_estimator,
                                                                       profile) -> None:
    plan = build_plan(linear_model_from_estimator(bundled_estimator), InputEncoding.pixels(784), profile)
    public = plan.public
    keys = ClientKeys(public)
    inputs = np.random.default_rng(7).integers(0, 256, (3, public.n_features))
    single, batch = keys.encrypt_single(inputs[0]), keys.encrypt_batch(inputs)
    stream = _Repeatable()
    monkeypatch.setattr(ring, "random_bytes", stream)

    def replies() -> tuple[bytes, bytes]:
        stream.restart()
        evaluator = Evaluator(plan)
        key = evaluator.prepare_key(keys.public_key)
        evaluator.zeros.fill(key)
        return (evaluator.score_single(read_request(single, Kind.SINGLE, 1, 1, public.params), key),
                evaluator.score_batch(read_request(batch, Kind.BATCH, public.n_features, public.degree,
                                                   public.params), key))

    compiled = replies()
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    reference = replies()
    assert compiled == reference
    expected = plan.model.scores(inputs)
    assert (keys.decrypt_single(reference[0]) == expected[0]).all()
    assert (keys.decrypt_batch(reference[1]) == expected).all()


def test_the_loops_stay_inside_their_buffers(tmp_path: Path) -> None:
    """tests/protocol/kernels_bounds.c runs every loop on exactly sized buffers, every width, short and uneven
    lengths, under AddressSanitizer and UndefinedBehaviorSanitizer: any stray read, write or undefined
    operation aborts it."""
    if shutil.which("gcc") is None:
        missing_part("no gcc to build the loops with AddressSanitizer")
    harness = tmp_path / "kernels_bounds"
    # -O0: every access stays in the code the sanitizers instrument, and the unrolled packing loops build in
    # seconds (at -O1 they take most of this test's time).
    subprocess.run(["gcc", "-O0", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-math-errno", "-o", str(harness), str(Path(__file__).with_name("kernels_bounds.c")),
                    str(PROJECT_ROOT / "bfv" / "_kernels.c")], check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(harness)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "bounds kept", result.stdout + result.stderr
