"""Parameter sets of the v1 protocol and their security check.

Three profiles, all at >= 128-bit classical security by the HomomorphicEncryption.org standard's
table for ternary secrets (log2 Q <= 54 at N = 2048, <= 109 at N = 4096, <= 218 at N = 8192):

- `compact` (default): N = 4096, one 60-bit data prime. Small requests and replies.
- `compact-2048`: N = 2048, one 54-bit data prime: what the `compact` setting plans a square network
  on first (`NETWORK_PROFILES`). A network's single-image reply carries one c1 of N coefficients per
  group of outputs, and its request one c0 of N per chunk of inputs: for a wide layer both counts
  grow as N shrinks, but their bytes together shrink about as sqrt(N).
- `flooded`: N = 8192, two 60-bit data primes (plus one SEAL needs as its "special" prime, counted
  in the security check although our keys never use it), so there is room for 60 bits of
  statistical noise flooding on top of the scores' own noise.

The plaintext modulus is not fixed here: it is a batching prime of the smallest bit length that
holds every score the quantized model can produce (see `plan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import seal

# HomomorphicEncryption.org security standard (Albrecht et al., 2018), Table 1, ternary secret,
# 128-bit classical security: the largest log2 of the ciphertext modulus for each ring degree.
HE_STANDARD_MAX_LOG_Q_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

PRIME_BITS = 60
# t < 2^32 keeps every product the arithmetic makes with t, or with a message below t, inside 64 bits.
MAX_PLAIN_BITS = 32
MIN_PLAIN_BITS = 16  # SEAL finds no batching prime below 16 bits for these degrees


@dataclass(frozen=True)
class Profile:
    name: str
    degree: int
    data_primes: int
    extra_primes: int
    flooding: bool
    prime_bits: int = PRIME_BITS


PROFILES = {
    "compact": Profile("compact", 4096, data_primes=1, extra_primes=0, flooding=False),
    "flooded": Profile("flooded", 8192, data_primes=2, extra_primes=1, flooding=True),
    "compact-2048": Profile("compact-2048", 2048, data_primes=1, extra_primes=0, flooding=False, prime_bits=54),
}
PROFILE_IDS = {name: index for index, name in enumerate(PROFILES, start=1)}
# The profiles a square network is planned on for each setting of the operator's, in order: the first
# that holds both of its layouts (else the first that holds the single one) serves it.
NETWORK_PROFILES = {"compact": ("compact-2048", "compact"), "flooded": ("flooded",)}


@dataclass(frozen=True)
class RingParameters:
    """Everything both ends need to build the same SEAL context and interpret the same bits."""

    profile: str
    degree: int
    data_primes: tuple[int, ...]
    extra_primes: tuple[int, ...]
    plain_modulus: int

    @property
    def all_primes(self) -> tuple[int, ...]:
        return self.data_primes + self.extra_primes

    @property
    def log_q(self) -> int:
        """Bits of the whole coefficient modulus, the quantity the security table bounds."""
        return sum(prime.bit_length() for prime in self.all_primes)

    @property
    def data_modulus(self) -> int:
        return math.prod(self.data_primes)

    @property
    def coefficient_bits(self) -> tuple[int, ...]:
        return tuple(prime.bit_length() for prime in self.data_primes)

    def meets_128_bit_security(self) -> bool:
        limit = HE_STANDARD_MAX_LOG_Q_128.get(self.degree)
        return limit is not None and self.log_q <= limit


@lru_cache(maxsize=None)
def _primes(degree: int, count: int, bits: int) -> tuple[int, ...]:
    return tuple(m.value() for m in seal.CoeffModulus.Create(degree, [bits] * count))


def ring_parameters(profile_name: str, plain_bits: int) -> RingParameters:
    """The profile's primes and a batching plaintext prime of at least `plain_bits` bits, below 2^32.

    SEAL gives the largest batching prime of a bit length and finds none for a few lengths (19
    bits at N = 8192): the next length up serves as well, since t only has to be large enough.
    """
    profile = PROFILES[profile_name]
    primes = _primes(profile.degree, profile.data_primes + profile.extra_primes, profile.prime_bits)
    plain = _batching_prime(profile.degree, max(plain_bits, MIN_PLAIN_BITS))
    return RingParameters(profile=profile.name, degree=profile.degree,
                          data_primes=primes[: profile.data_primes], extra_primes=primes[profile.data_primes :],
                          plain_modulus=plain)


@lru_cache(maxsize=None)
def _batching_prime(degree: int, bits: int) -> int:
    for length in range(bits, MAX_PLAIN_BITS + 1):
        try:
            return seal.PlainModulus.Batching(degree, length).value()
        except (RuntimeError, ValueError):  # SEAL: "failed to find enough qualifying primes"
            continue
    raise ValueError(f"no batching prime of {bits} to {MAX_PLAIN_BITS} bits for N = {degree}")
