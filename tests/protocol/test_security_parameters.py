"""Every parameter set the service evaluates meets 128-bit security (HomomorphicEncryption.org table)."""

from __future__ import annotations

import seal

from service.azureml.parameters import DEGREE, PRIME_BITS, tutorial_parameters

# Largest total coefficient-modulus bits for 128-bit classical security, ternary secret (HE Standard).
HE_STANDARD_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def test_seed_parameters_are_128_bit_secure() -> None:
    params = tutorial_parameters()
    total_bits = sum(modulus.bit_length() for modulus in params.key_moduli)
    assert total_bits == sum(PRIME_BITS) == 200
    assert total_bits <= HE_STANDARD_128[DEGREE]
    assert seal.CoeffModulus.MaxBitCount(DEGREE, seal.sec_level_type.tc128) == HE_STANDARD_128[DEGREE]
