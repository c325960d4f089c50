/* Compiled hot loops of the v1 protocol, called through ctypes by bfv/kernels.py.
 *
 * Plain C with no Python API, so it builds wherever a C compiler is found (no Python headers needed).
 * The numpy code it replaces (bfv/bitpack.py) stays the reference: tests/protocol/test_compiled_loops.py compares
 * the two bit for bit. The functions trust bfv/kernels.py for sizes and allocate nothing.
 *
 * Bit layout: value i occupies bits [i * width, (i + 1) * width) of a little-endian bit string,
 * padded with zero values to a multiple of eight, so `count` values take ceil(count / 8) * width bytes.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the bit layout is read and written with little-endian word loads"
#endif

#define INLINE static inline __attribute__((always_inline))

/* On x86-64 the loops that vectorize are also built for x86-64-v3 (AVX2, POPCNT), picked at load time
 * (GCC function multi-versioning); the baseline build runs everywhere else. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_LOOP __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_LOOP
#endif

INLINE uint64_t low_mask(unsigned width) {
    return width >= 64 ? UINT64_MAX : (((uint64_t)1 << width) - 1);
}

/* Eight values make one group of exactly `width` bytes. Every function below is instantiated once per
 * width (the switches at the end), so the shifts and offsets are constants and the loops unroll. */
INLINE void pack_group(const uint64_t *values, uint8_t *out, const unsigned width) {
    const uint64_t mask = low_mask(width);
    u128 pending = 0;
    unsigned held = 0, position = 0;
    _Pragma("GCC unroll 8")
    for (unsigned lane = 0; lane < 8; lane++) {
        pending |= (u128)(values[lane] & mask) << held;
        held += width;
        if (held >= 64) {
            const uint64_t word = (uint64_t)pending;
            memcpy(out + position, &word, 8);
            position += 8;
            pending >>= 64;
            held -= 64;
        }
    }
    const uint64_t rest = (uint64_t)pending;  /* held is a multiple of 8 here: 8 * width bits in all */
    memcpy(out + position, &rest, held / 8);
}

INLINE uint64_t load_word(const uint8_t *bytes) {
    uint64_t word;
    memcpy(&word, bytes, 8);
    return word;
}

/* Reads up to 9 bytes past the group's `width`: `unpack_width` passes a padded copy where the data ends. */
INLINE void unpack_group(const uint8_t *data, uint64_t *out, const unsigned width) {
    const uint64_t mask = low_mask(width);
    _Pragma("GCC unroll 8")
    for (unsigned lane = 0; lane < 8; lane++) {
        const unsigned byte = lane * width / 8, shift = lane * width % 8;
        uint64_t value = load_word(data + byte) >> shift;
        if (shift + width > 64) {
            value |= (uint64_t)data[byte + 8] << (64 - shift);
        }
        out[lane] = value & mask;
    }
}

INLINE void switch_group(const double *fractions, uint64_t *out, const unsigned bits) {
    const double scale = (double)((uint64_t)1 << bits);
    _Pragma("GCC unroll 8")
    for (unsigned lane = 0; lane < 8; lane++) {
        out[lane] = (uint64_t)llrint(fractions[lane] * scale);
    }
}

/* The last, partial group goes through a zero-padded copy. */
INLINE void pack_width(const uint64_t *values, size_t count, uint8_t *out, const unsigned width) {
    const size_t whole = count / 8;
    for (size_t group = 0; group < whole; group++) {
        pack_group(values + 8 * group, out + width * group, width);
    }
    if (count % 8) {
        uint64_t padded[8] = {0};
        memcpy(padded, values + 8 * whole, (count % 8) * sizeof(uint64_t));
        pack_group(padded, out + width * whole, width);
    }
}

INLINE void pack_fractions_width(const double *fractions, size_t count, uint8_t *out, const unsigned bits) {
    const size_t whole = count / 8;
    uint64_t values[8];
    for (size_t group = 0; group < whole; group++) {
        switch_group(fractions + 8 * group, values, bits);
        pack_group(values, out + bits * group, bits);
    }
    if (count % 8) {
        double padded[8] = {0};
        memcpy(padded, fractions + 8 * whole, (count % 8) * sizeof(double));
        switch_group(padded, values, bits);
        memset(values + count % 8, 0, (8 - count % 8) * sizeof(uint64_t));
        pack_group(values, out + bits * whole, bits);
    }
}

INLINE void unpack_width(const uint8_t *data, size_t count, uint64_t *out, const unsigned width) {
    const size_t groups = (count + 7) / 8, size = groups * width;
    size_t group = 0;
    /* unpack_group reads up to 9 bytes past a group's start plus width: in place while they are inside. */
    for (; group < groups && width * (group + 1) + 9 <= size; group++) {
        unpack_group(data + width * group, out + 8 * group, width);
    }
    for (; group < groups; group++) {  /* the last groups: from a copy with room for those reads */
        uint8_t padded[64 + 9] = {0};
        uint64_t values[8];
        const size_t first = 8 * group, rest = count - first < 8 ? count - first : 8;
        memcpy(padded, data + width * group, width);
        unpack_group(padded, values, width);
        memcpy(out + first, values, rest * sizeof(uint64_t));
    }
}

#define WIDTHS_1_TO_64(X) \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) \
    X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32) \
    X(33) X(34) X(35) X(36) X(37) X(38) X(39) X(40) X(41) X(42) X(43) X(44) X(45) X(46) X(47) X(48) \
    X(49) X(50) X(51) X(52) X(53) X(54) X(55) X(56) X(57) X(58) X(59) X(60) X(61) X(62) X(63) X(64)
#define WIDTHS_1_TO_52(X) \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) \
    X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32) \
    X(33) X(34) X(35) X(36) X(37) X(38) X(39) X(40) X(41) X(42) X(43) X(44) X(45) X(46) X(47) X(48) \
    X(49) X(50) X(51) X(52)

/* values[0 .. count), each masked to `width` bits (1 <= width <= 64), into ceil(count / 8) * width bytes. */
void ein_pack(const uint64_t *values, size_t count, unsigned width, uint8_t *out) {
    switch (width) {
#define CASE(W) case W: pack_width(values, count, out, W); break;
        WIDTHS_1_TO_64(CASE)
#undef CASE
    }
}

/* round(f * 2^bits) mod 2^bits for each fraction f, packed at `bits` (1 <= bits <= 52), as numpy's
 * rint, conversion to int64 and masking: llrint rounds half to even in the default rounding mode. */
void ein_pack_fractions(const double *fractions, size_t count, unsigned bits, uint8_t *out) {
    switch (bits) {
#define CASE(W) case W: pack_fractions_width(fractions, count, out, W); break;
        WIDTHS_1_TO_52(CASE)
#undef CASE
    }
}

/* The first `count` values of ceil(count / 8) * width bytes at `data` (1 <= width <= 64). */
void ein_unpack(const uint8_t *data, size_t count, unsigned width, uint64_t *out) {
    switch (width) {
#define CASE(W) case W: unpack_width(data, count, out, W); break;
        WIDTHS_1_TO_64(CASE)
#undef CASE
    }
}

/* Sampling and reduction (bfv/ring.py). */

/* Uniform ternary values from random bytes: bytes >= 243 are rejected, the others give byte % 3 - 1.
 * Writes at most `room` values; returns how many. */
size_t ein_ternary(const uint8_t *bytes, size_t count, int64_t *out, size_t room) {
    size_t written = 0;
    for (size_t i = 0; i < count && written < room; i++) {
        if (bytes[i] < 243) {
            out[written++] = (int64_t)(bytes[i] % 3) - 1;
        }
    }
    return written;
}

/* Centred binomial values: the 1 bits among each word's low `eta` bits minus those among the next `eta`. */
VECTOR_LOOP void ein_centred_binomial(const uint64_t *words, size_t count, unsigned eta, int64_t *out) {
    const uint64_t mask = low_mask(eta);
    for (size_t i = 0; i < count; i++) {
        out[i] = (int64_t)__builtin_popcountll(words[i] & mask) - (int64_t)__builtin_popcountll((words[i] >> eta) & mask);
    }
}

/* Signed values (rows x degree) as residues (rows x primes x degree): v mod p in [0, p) for each prime p
 * (p < 2^63). Values in [-p, p), as secrets and errors are, take a branch-free loop. */
VECTOR_LOOP void ein_signed_residues(const int64_t *values, size_t rows, size_t degree, const uint64_t *primes, size_t count,
                         uint64_t *out) {
    const size_t size = rows * degree;
    int64_t smallest = 0, largest = 0;
    for (size_t i = 0; i < size; i++) {
        smallest = values[i] < smallest ? values[i] : smallest;
        largest = values[i] > largest ? values[i] : largest;
    }
    for (size_t row = 0; row < rows; row++) {
        const int64_t *source = values + row * degree;
        for (size_t j = 0; j < count; j++) {
            const int64_t prime = (int64_t)primes[j];
            uint64_t *target = out + (row * count + j) * degree;
            if (smallest >= -prime && largest < prime) {
                for (size_t i = 0; i < degree; i++) {
                    target[i] = (uint64_t)(source[i] + (prime & (source[i] >> 63)));
                }
            } else {
                for (size_t i = 0; i < degree; i++) {
                    const int64_t remainder = source[i] % prime;
                    target[i] = (uint64_t)(remainder < 0 ? remainder + prime : remainder);
                }
            }
        }
    }
}

/* Coefficients of the negacyclic product small * residues in Z_p[X]/(X^n + 1) at `count` positions (each
 * below n): out[j] = sum_k residues[k] * small[positions[j] - k] mod p, where small[-m] means -small[n - m].
 * Exact for residues < 2^60 and |small| * 2^30 * n < 2^63 (bfv/kernels.py checks): each residue is
 * split in two 30-bit halves and each half's sum is kept in 64 bits. `scratch` holds 3 * n int32 values:
 * the halves, and small reversed, so that every loop reads forward (and vectorizes). Returns 0, or -1
 * (and computes nothing) when a small coefficient or a position is out of those bounds. */
VECTOR_LOOP int ein_negacyclic_at(const int64_t *small, const uint64_t *residues, size_t n, const int64_t *positions,
                                   size_t count, uint64_t prime, int32_t *scratch, uint64_t *out) {
    int32_t *low_halves = scratch, *high_halves = scratch + n, *reversed = scratch + 2 * n;
    if (n == 0) {
        return -1;
    }
    int64_t smallest = 0, largest = 0;
    for (size_t k = 0; k < n; k++) {
        smallest = small[k] < smallest ? small[k] : smallest;
        largest = small[k] > largest ? small[k] : largest;
    }
    const int64_t bound = ((int64_t)1 << 33) / (int64_t)n;  /* |small| * 2^30 * n < 2^63 */
    if (smallest <= -bound || largest >= bound) {
        return -1;
    }
    for (size_t j = 0; j < count; j++) {
        if (positions[j] < 0 || (size_t)positions[j] >= n) {
            return -1;
        }
    }
    for (size_t k = 0; k < n; k++) {
        low_halves[k] = (int32_t)(residues[k] & (((uint64_t)1 << 30) - 1));
        high_halves[k] = (int32_t)(residues[k] >> 30);
        reversed[k] = (int32_t)small[n - 1 - k];
    }
    for (size_t j = 0; j < count; j++) {
        /* small[position - k] = reversed[n - 1 - position + k] for k <= position; for k > position,
         * -small[n + position - k] = -reversed[k - position - 1]. */
        const size_t position = (size_t)positions[j], offset = n - 1 - position;
        int64_t low = 0, high = 0;
        for (size_t k = 0; k <= position; k++) {
            low += (int64_t)reversed[offset + k] * low_halves[k];
            high += (int64_t)reversed[offset + k] * high_halves[k];
        }
        for (size_t k = position + 1; k < n; k++) {
            low -= (int64_t)reversed[k - position - 1] * low_halves[k];
            high -= (int64_t)reversed[k - position - 1] * high_halves[k];
        }
        const __int128 remainder = ((__int128)high * ((__int128)1 << 30) + low) % (__int128)prime;
        out[j] = (uint64_t)(remainder < 0 ? remainder + prime : remainder);
    }
    return 0;
}

/* Residues (< 2^60) as `limbs` float64 limbs of `bits` bits: out[l * count + i] = (residues[i] >> bits * l)
 * & (2^bits - 1), exactly (for exact float64 dot products, bfv/ring.py split_limbs). */
VECTOR_LOOP void ein_split_limbs(const uint64_t *residues, size_t count, unsigned bits, size_t limbs, double *out) {
    const uint64_t mask = low_mask(bits);
    for (size_t limb = 0; limb < limbs; limb++) {
        const unsigned shift = (unsigned)(bits * limb);
        double *target = out + limb * count;
        for (size_t i = 0; i < count; i++) {
            target[i] = (double)(int64_t)((residues[i] >> shift) & mask);
        }
    }
}

/* Adds centred binomial errors (`ein_centred_binomial` of words[i], one word per coefficient) to residues
 * (rows x primes x n, each below its prime), modulo each prime: bfv/ring.py add_random_errors. */
VECTOR_LOOP void ein_add_centred_binomial(uint64_t *residues, const uint64_t *words, size_t rows, size_t n,
                                          unsigned eta, const uint64_t *primes, size_t count) {
    const uint64_t mask = low_mask(eta);
    for (size_t row = 0; row < rows; row++) {
        const uint64_t *source = words + row * n;
        for (size_t j = 0; j < count; j++) {
            const uint64_t prime = primes[j];
            uint64_t *target = residues + (row * count + j) * n;
            for (size_t i = 0; i < n; i++) {
                const int64_t error = (int64_t)__builtin_popcountll(source[i] & mask)
                                      - (int64_t)__builtin_popcountll((source[i] >> eta) & mask);
                /* residue + error in (-p, 2p): add p where negative, subtract p where p or more */
                int64_t sum = (int64_t)target[i] + error;
                sum += (int64_t)prime & (sum >> 63);
                target[i] = (uint64_t)(sum >= (int64_t)prime ? sum - (int64_t)prime : sum);
            }
        }
    }
}

/* Shoup's precomputed quotients floor(w * 2^64 / p) of residues w below p (bfv/kernels.py shoup_quotients). */
void ein_shoup(const uint64_t *w, size_t count, uint64_t prime, uint64_t *out) {
    for (size_t i = 0; i < count; i++) out[i] = (uint64_t)(((u128)w[i] << 64) / prime);
}

/* out[i] = sum over k < terms of x[k][i] * w[k][i] mod p, plus extra_x[i] * extra_w[i], for residues below p
 * laid out (terms x n): the products are summed in 128 bits, which bfv/kernels.py checks they fit
 * ((terms + 1) p^2 < 2^128), and each sum h * 2^64 + l is reduced once, as h * (2^64 mod p) + l with two
 * Shoup products (bfv/ring.py dot_mod). One multiplication per term, and no precomputed quotients to read. */
INLINE uint64_t shoup_multiply(uint64_t a, uint64_t w, uint64_t w_quotient, uint64_t prime) {
    return a * w - (uint64_t)(((u128)a * w_quotient) >> 64) * prime;  /* in [0, 2p) for any 64-bit a */
}

INLINE uint64_t reduce_below_twice(uint64_t value, uint64_t prime) {  /* value < 4p, reduced below p */
    value -= (2 * prime) & (uint64_t)(-(int64_t)(value >= 2 * prime));
    return value - (prime & (uint64_t)(-(int64_t)(value >= prime)));
}

void ein_dot_mod(const uint64_t *x, const uint64_t *w, size_t terms, size_t n, const uint64_t *extra_x,
                 const uint64_t *extra_w, uint64_t prime, uint64_t *out) {
    const uint64_t wrap = (uint64_t)(((u128)1 << 64) % prime), wrap_quotient = (uint64_t)(((u128)wrap << 64) / prime);
    const uint64_t one_quotient = (uint64_t)(((u128)1 << 64) / prime);
    for (size_t i = 0; i < n; i++) {
        u128 sum = (u128)extra_x[i] * extra_w[i];
        for (size_t k = 0; k < terms; k++) sum += (u128)x[k * n + i] * w[k * n + i];
        const uint64_t high = shoup_multiply((uint64_t)(sum >> 64), wrap, wrap_quotient, prime);
        out[i] = reduce_below_twice(high + shoup_multiply((uint64_t)sum, 1, one_quotient, prime), prime);
    }
}

/* Negacyclic NTTs in SEAL's domain (bfv/ntt.py builds the tables and checks them against SEAL): output i of
 * the forward transform is a(psi^(2 * bitrev(i) + 1)) for SEAL's root psi. `roots[m + i]` (1 <= m < n, i < m)
 * is psi^bitrev(m + i), `inverse_roots[m + i]` psi^-bitrev(m + i), each with its Shoup quotient.
 * Cooley-Tukey forward and Gentleman-Sande inverse butterflies with Harvey's lazy reduction: values stay
 * below 4p (p < 2^62) inside a transform, and leave it reduced below p. */
void ein_ntt_forward(uint64_t *polys, size_t rows, size_t n, uint64_t prime, const uint64_t *roots,
                     const uint64_t *roots_shoup) {
    const uint64_t twice = 2 * prime;
    for (size_t row = 0; row < rows; row++) {
        uint64_t *a = polys + row * n;
        for (size_t m = 1, gap = n >> 1; m < n; m <<= 1, gap >>= 1) {
            for (size_t i = 0; i < m; i++) {
                const uint64_t w = roots[m + i], w_quotient = roots_shoup[m + i];
                uint64_t *x = a + 2 * i * gap, *y = x + gap;
                for (size_t j = 0; j < gap; j++) {
                    uint64_t u = x[j];
                    u -= twice & (uint64_t)(-(int64_t)(u >= twice));
                    const uint64_t v = shoup_multiply(y[j], w, w_quotient, prime);
                    x[j] = u + v;
                    y[j] = u - v + twice;
                }
            }
        }
        for (size_t j = 0; j < n; j++) {
            uint64_t value = a[j];
            value -= twice & (uint64_t)(-(int64_t)(value >= twice));
            a[j] = value - (prime & (uint64_t)(-(int64_t)(value >= prime)));
        }
    }
}

void ein_ntt_inverse(uint64_t *polys, size_t rows, size_t n, uint64_t prime, const uint64_t *inverse_roots,
                     const uint64_t *inverse_roots_shoup, uint64_t n_inverse, uint64_t n_inverse_shoup) {
    const uint64_t twice = 2 * prime;
    for (size_t row = 0; row < rows; row++) {
        uint64_t *a = polys + row * n;
        for (size_t m = n >> 1, gap = 1; m >= 1; m >>= 1, gap <<= 1) {
            for (size_t i = 0; i < m; i++) {
                const uint64_t w = inverse_roots[m + i], w_quotient = inverse_roots_shoup[m + i];
                uint64_t *x = a + 2 * i * gap, *y = x + gap;
                for (size_t j = 0; j < gap; j++) {
                    const uint64_t u = x[j], v = y[j];  /* both below 2p */
                    uint64_t sum = u + v;
                    x[j] = sum - (twice & (uint64_t)(-(int64_t)(sum >= twice)));
                    y[j] = shoup_multiply(u - v + twice, w, w_quotient, prime);
                }
            }
        }
        for (size_t j = 0; j < n; j++) {
            const uint64_t value = shoup_multiply(a[j], n_inverse, n_inverse_shoup, prime);
            a[j] = value - (prime & (uint64_t)(-(int64_t)(value >= prime)));
        }
    }
}

/* out[i] = x[i] * w[i] mod p for residues below p < 2^62, with w's Shoup quotients (ein_shoup). */
void ein_multiply_mod(const uint64_t *x, const uint64_t *w, const uint64_t *w_shoup, size_t n, uint64_t prime,
                      uint64_t *out) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t product = shoup_multiply(x[i], w[i], w_shoup[i], prime);
        out[i] = product - (prime & (uint64_t)(-(int64_t)(product >= prime)));
    }
}
