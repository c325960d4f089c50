"""NTT-domain polynomial products, done by SEAL on objects we write and read ourselves, or by the
compiled transforms in SEAL's domain (`bfv.ntt`) where they are built.

SEAL is used as the definition of the negacyclic NTT and as a fast one: polynomials go in as
serialized ciphertexts and plaintexts that this module writes (SEAL 4.x layout, uncompressed), and
come back out as numpy arrays. The compiled transforms skip those objects; their tables are checked
against SEAL's own transform when a ring is made. Keys, encryption, noise and wire formats are ours,
so both ends control every coefficient.

Layouts (little-endian): header = u16 0xA15E, u8 16, u8 4, u8 minor, u8 compression 0, u16 0,
u64 total size. Ciphertext members = 32-byte parms_id, u8 is_ntt_form, u64 size, u64 degree,
u64 primes, f64 scale (1.0), u64 correction factor (1), then an array object (header, u64 count,
count x u64). Plaintext members = parms_id (zero unless in NTT form), u64 count, f64 scale, array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import seal

from bfv import kernels
from bfv.ntt import NttTables, transform
from bfv.params import RingParameters

_HEADER = struct.Struct("<HBBBBHQ")
_CIPHERTEXT = struct.Struct("<32sBQQQdQ")
_PLAINTEXT = struct.Struct("<32sQd")
_U64 = struct.Struct("<Q")
_SEAL_VERSION = (4, 1)
_TABLES: dict[tuple[int, tuple[int, ...]], list[NttTables] | None] = {}  # per (N, data primes)


def _object(members: bytes) -> bytes:
    return _HEADER.pack(0xA15E, _HEADER.size, *_SEAL_VERSION, 0, 0, _HEADER.size + len(members)) + members


def _array(words: np.ndarray) -> bytes:
    data = _U64.pack(words.size) + np.ascontiguousarray(words, dtype="<u8").tobytes()
    return _object(data)


@dataclass(frozen=True)
class NttFactor:
    """A fixed factor of polynomial products (a secret key, say), kept in the NTT domain: as residues (k, N)
    with their Shoup quotients for the compiled loops, or as a SEAL plaintext where they are not built."""

    residues: np.ndarray | None
    quotients: np.ndarray | None
    plaintext: seal.Plaintext | None


class SealRing:
    """A SEAL context for `params` at its data level, with conversions to and from numpy."""

    def __init__(self, params: RingParameters) -> None:
        self.params = params
        parms = seal.EncryptionParameters(seal.scheme_type.bfv)
        parms.set_poly_modulus_degree(params.degree)
        parms.set_coeff_modulus([seal.Modulus(prime) for prime in params.all_primes])
        parms.set_plain_modulus(seal.Modulus(params.plain_modulus))
        self.context = seal.SEALContext(parms, True, seal.sec_level_type.tc128)
        if not self.context.parameters_set():
            raise ValueError(f"SEAL refuses the parameters: {self.context.parameter_error_message()}")
        self.parms_id = struct.pack("<4Q", *self.context.first_parms_id())
        self.evaluator = seal.Evaluator(self.context)
        self._encoder = seal.BatchEncoder(self.context)
        self._shape = (len(params.data_primes), params.degree)
        self._ciphertext_offset = _HEADER.size + _CIPHERTEXT.size + _HEADER.size + _U64.size
        self._tables = self._compiled_tables() if kernels.AVAILABLE else None

    @property
    def compiled_transforms(self) -> bool:
        """Whether this ring's NTTs run compiled (else in SEAL)."""
        return self._tables is not None

    def _compiled_tables(self) -> list[NttTables] | None:
        """The compiled transforms' tables for this ring's data primes, checked against SEAL's transform of X;
        None (SEAL transforms everything) if any prime's do not match."""
        key = (self.params.degree, self.params.data_primes)
        if key not in _TABLES:
            x = np.zeros((2, *self._shape), dtype=np.uint64)
            x[:, :, 1] = 1
            transformed = self.polys(self.to_ntt(x))[0]
            tables = [NttTables.matching(prime, transformed[row]) for row, prime in enumerate(self.params.data_primes)]
            _TABLES[key] = None if None in tables else tables
        return _TABLES[key]

    def ciphertext(self, polys: np.ndarray, ntt_form: bool = False) -> seal.Ciphertext:
        """A SEAL ciphertext holding `polys` (2, k, N), reduced residues."""
        members = _CIPHERTEXT.pack(self.parms_id, int(ntt_form), polys.shape[0], self.params.degree,
                                   self._shape[0], 1.0, 1) + _array(polys)
        ciphertext = seal.Ciphertext()
        ciphertext.load_bytes(self.context, _object(members))
        return ciphertext

    def polys(self, ciphertext: seal.Ciphertext) -> np.ndarray:
        """A ciphertext's polynomials as a (size, k, N) uint64 array (read-only: a view of SEAL's bytes)."""
        raw = ciphertext.to_string()
        return np.frombuffer(raw, dtype=np.uint64, offset=self._ciphertext_offset).reshape(-1, *self._shape)

    def ntt_plaintext(self, poly: np.ndarray) -> seal.Plaintext:
        """`poly` (k, N), given by its coefficients, as a plaintext in NTT form for `multiply_plain`."""
        # SEAL refuses a ciphertext whose second polynomial is zero ("transparent"): put a one there.
        ciphertext = self.ciphertext(np.stack([poly, np.ones_like(poly)]))
        self.evaluator.transform_to_ntt_inplace(ciphertext)
        return self.ntt_plaintext_from_ntt(self.polys(ciphertext)[0])

    def ntt_plaintext_from_ntt(self, transformed: np.ndarray) -> seal.Plaintext:
        """A plaintext in NTT form holding `transformed` (k, N), already in the NTT domain."""
        members = _PLAINTEXT.pack(self.parms_id, transformed.size, 1.0) + _array(transformed)
        plaintext = seal.Plaintext()
        plaintext.load_bytes(self.context, _object(members))
        return plaintext

    def to_ntt(self, polys: np.ndarray) -> seal.Ciphertext:
        ciphertext = self.ciphertext(polys)
        self.evaluator.transform_to_ntt_inplace(ciphertext)
        return ciphertext

    def ntt_factor(self, poly: np.ndarray) -> NttFactor:
        """`poly` (k, N), given by its coefficients, as a factor for `multiply_ntt` and `multiply`."""
        if self._tables is None:
            return NttFactor(None, None, self.ntt_plaintext(poly))
        residues = self.ntt_rows(poly[None])[0]
        quotients = np.stack([kernels.shoup_quotients(row, prime)
                              for row, prime in zip(residues, self.params.data_primes)])
        return NttFactor(residues, quotients, None)

    def multiply_ntt(self, polys_ntt: np.ndarray, factor: NttFactor, ntt_form: bool = False) -> np.ndarray:
        """Each of `polys_ntt` (rows, k, N), given in the NTT domain, times `factor`: in coefficients, or left
        in the NTT domain (`ntt_form`). SEAL takes two rows at a time (a ciphertext's two polynomials)."""
        if factor.plaintext is None:
            product = np.stack([kernels.multiply_mod(polys_ntt[:, row], factor.residues[row], factor.quotients[row],
                                                     prime) for row, prime in enumerate(self.params.data_primes)],
                               axis=1)
            return product if ntt_form else self.ntt_rows(product, inverse=True)
        if polys_ntt.shape[0] != 2:
            raise ValueError("SEAL multiplies the two polynomials of a ciphertext")
        ciphertext = self.ciphertext(polys_ntt, ntt_form=True)
        self.evaluator.multiply_plain_inplace(ciphertext, factor.plaintext)
        return self.polys(ciphertext) if ntt_form else self.from_ntt(ciphertext)

    def multiply(self, polys: np.ndarray, factor: NttFactor) -> np.ndarray:
        """Each of `polys` (rows, k, N; two where SEAL multiplies), given by coefficients, times `factor`, in
        coefficients."""
        return self.multiply_ntt(self.ntt_rows(polys) if factor.plaintext is None
                                 else self.polys(self.to_ntt(polys)), factor)

    def from_ntt(self, ciphertext: seal.Ciphertext) -> np.ndarray:
        self.evaluator.transform_from_ntt_inplace(ciphertext)
        return self.polys(ciphertext)

    def ntt_rows(self, rows: np.ndarray, inverse: bool = False) -> np.ndarray:
        """Residues (rows, k, N), each below its prime, to (`inverse`: from) SEAL's NTT domain: compiled where
        the kernels are built (`bfv.ntt`), else two rows per SEAL transform.

        SEAL refuses a ciphertext whose second polynomial is zero ("transparent"), which a client's c0 may
        be: such a row goes first, twice, and a pair of zero rows stays zero (it is zero in both domains)."""
        if self._tables is not None:
            return transform(rows, self._tables, inverse)
        out = np.zeros(rows.shape, dtype=np.uint64)
        for start in range(0, len(rows), 2):
            live = [index for index in range(start, min(start + 2, len(rows))) if rows[index].any()]
            if not live:
                continue
            pair = np.ascontiguousarray(rows[live] if len(live) == 2 else rows[live * 2])
            done = self.from_ntt(self.ciphertext(pair, ntt_form=True)) if inverse else self.polys(self.to_ntt(pair))
            out[live] = done[: len(live)]
        return out

    def batch_encode(self, slots: np.ndarray) -> np.ndarray:
        """The plaintext polynomial (N,) whose slots are `slots` (values below t), SEAL's batching."""
        plaintext = self._encoder.encode(np.ascontiguousarray(slots, dtype=np.uint64))
        raw = plaintext.to_bytes()
        words = np.frombuffer(raw, dtype="<u8", offset=_HEADER.size + _PLAINTEXT.size + _HEADER.size + _U64.size)
        coefficients = np.zeros(self.params.degree, dtype=np.uint64)
        coefficients[: words.size] = words
        return coefficients

    def batch_decode(self, coefficients: np.ndarray) -> np.ndarray:
        """The slots (N,) of the plaintext polynomial `coefficients` (values below t)."""
        members = _PLAINTEXT.pack(bytes(32), coefficients.size, 1.0) + _array(coefficients)
        plaintext = seal.Plaintext()
        plaintext.load_bytes(self.context, _object(members))
        return np.asarray(self._encoder.decode_uint64(plaintext), dtype=np.uint64)
