"""the tutorial's client's encryption parameters, as a SEAL 4 context built once per process.

the tutorial's client (encrypted-inference 0.9) always encrypts with CKKS, N = 8192, primes of
60/40/40/60 bits (the last one special) and scale 2^40. Both the request checks in the web process
and the `seal` engine compare what clients send against these.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

import seal

DEGREE = 8192
SLOTS = DEGREE // 2
PRIME_BITS = [60, 40, 40, 60]
# A seeded client ciphertext inflates to about 200 KB, an unseeded one to about 400 KB.
MAX_INFLATED_CIPHERTEXT = 1024 * 1024
# Input scales the circuits support: the product must fit the modulus after one rescale.
SCALE_RANGE = (2.0**30, 2.0**45)
# The rotations the tutorial's client makes Galois keys for (`EILinearRegressionClient`: 1, 2, 4, ...,
# 2048 slots): the only rows a key blob may hold, and a superset of every circuit's rotations.
ROTATION_STEPS = tuple(1 << i for i in range((SLOTS - 1).bit_length()))


def ciphertexts_for(n_features: int) -> int:
    """How many ciphertexts the tutorial's client sends for one input of `n_features` (SLOTS each)."""
    return -(-n_features // SLOTS)


def parms_id_bytes(parms_id: list[int]) -> bytes:
    return struct.pack("<4Q", *parms_id)


@dataclass(frozen=True)
class SeedParameters:
    context: seal.SEALContext
    data_moduli: list[int]
    key_moduli: list[int]
    first_parms_id: bytes
    key_parms_id: bytes


@cache
def tutorial_parameters() -> SeedParameters:
    parms = seal.EncryptionParameters(seal.scheme_type.ckks)
    parms.set_poly_modulus_degree(DEGREE)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(DEGREE, PRIME_BITS))
    context = seal.SEALContext(parms, True, seal.sec_level_type.tc128)
    key_data = context.key_context_data()
    return SeedParameters(
        context=context,
        data_moduli=[modulus.value() for modulus in context.first_context_data().parms().coeff_modulus()],
        key_moduli=[modulus.value() for modulus in key_data.parms().coeff_modulus()],
        first_parms_id=parms_id_bytes(context.first_parms_id()),
        key_parms_id=parms_id_bytes(key_data.parms_id()),
    )
