/* Every loop of bfv/_kernels.c on buffers of exactly the size bfv/kernels.py gives it, each
 * allocated alone, for every width and for short and uneven lengths. Built with AddressSanitizer by
 * tests/protocol/test_compiled_loops.py: a read or write past any buffer ends the run with a report. Also checks that
 * unpack inverts pack, so the run does real work. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ein_pack(const uint64_t *values, size_t count, unsigned width, uint8_t *out);
void ein_pack_fractions(const double *fractions, size_t count, unsigned bits, uint8_t *out);
void ein_unpack(const uint8_t *data, size_t count, unsigned width, uint64_t *out);
size_t ein_ternary(const uint8_t *bytes, size_t count, int64_t *out, size_t room);
void ein_centred_binomial(const uint64_t *words, size_t count, unsigned eta, int64_t *out);
void ein_signed_residues(const int64_t *values, size_t rows, size_t degree, const uint64_t *primes, size_t count,
                         uint64_t *out);
int ein_negacyclic_at(const int64_t *small, const uint64_t *residues, size_t n, const int64_t *positions,
                      size_t count, uint64_t prime, int32_t *scratch, uint64_t *out);
void ein_split_limbs(const uint64_t *residues, size_t count, unsigned bits, size_t limbs, double *out);
void ein_add_centred_binomial(uint64_t *residues, const uint64_t *words, size_t rows, size_t n, unsigned eta,
                              const uint64_t *primes, size_t count);

void ein_shoup(const uint64_t *w, size_t count, uint64_t prime, uint64_t *out);
void ein_dot_mod(const uint64_t *x, const uint64_t *w, size_t terms, size_t n, const uint64_t *extra_x,
                 const uint64_t *extra_w, uint64_t prime, uint64_t *out);
void ein_multiply_mod(const uint64_t *x, const uint64_t *w, const uint64_t *w_shoup, size_t n, uint64_t prime,
                      uint64_t *out);
void ein_ntt_forward(uint64_t *polys, size_t rows, size_t n, uint64_t prime, const uint64_t *roots,
                     const uint64_t *roots_shoup);
void ein_ntt_inverse(uint64_t *polys, size_t rows, size_t n, uint64_t prime, const uint64_t *inverse_roots,
                     const uint64_t *inverse_roots_shoup, uint64_t n_inverse, uint64_t n_inverse_shoup);

static const uint64_t PRIMES[2] = {1152921504606830593ULL, 1152921504606748673ULL};

static uint64_t next_word(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ULL;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void *alloc(size_t bytes) {
    void *memory = malloc(bytes ? bytes : 1);
    if (!memory) {
        exit(2);
    }
    return memory;
}

int main(void) {
    uint64_t state = 1;
    for (size_t count = 1; count <= 41; count++) {
        uint64_t *values = alloc(count * 8), *back = alloc(count * 8);
        double *fractions = alloc(count * 8);
        for (unsigned width = 1; width <= 64; width++) {
            const size_t size = (count + 7) / 8 * width;
            uint8_t *packed = alloc(size);
            const uint64_t mask = width == 64 ? UINT64_MAX : (((uint64_t)1 << width) - 1);
            for (size_t i = 0; i < count; i++) {
                values[i] = next_word(&state) & mask;
                fractions[i] = (double)(next_word(&state) >> 11) / 9007199254740992.0;
            }
            ein_pack(values, count, width, packed);
            ein_unpack(packed, count, width, back);
            if (memcmp(values, back, count * 8) != 0) {
                printf("unpack does not invert pack: %zu values of %u bits\n", count, width);
                return 1;
            }
            if (width <= 52) {
                ein_pack_fractions(fractions, count, width, packed);
            }
            free(packed);
        }
        uint8_t *bytes = alloc(count);
        int64_t *small = alloc(count * 8), *positions = alloc(count * 8);
        uint64_t *residues = alloc(2 * count * 8), *words = alloc(count * 8), *out = alloc(2 * count * 8);
        int32_t *scratch = alloc(3 * count * 4);
        double *limbs = alloc(2 * count * 8);
        for (size_t i = 0; i < count; i++) {
            bytes[i] = (uint8_t)next_word(&state);
            words[i] = next_word(&state);
            small[i] = (int64_t)(next_word(&state) % 3) - 1;
            positions[i] = (int64_t)(next_word(&state) % count);
            residues[i] = next_word(&state) % PRIMES[0];
            residues[count + i] = next_word(&state) % PRIMES[1];
        }
        ein_ternary(bytes, count, small, count);
        ein_centred_binomial(words, count, 21, small);
        ein_signed_residues(small, 1, count, PRIMES, 2, out);
        if (ein_negacyclic_at(small, residues, count, positions, count, PRIMES[0], scratch, out) != 0) {
            printf("negacyclic_at refused ternary values at %zu coefficients\n", count);
            return 1;
        }
        ein_split_limbs(residues, count, 30, 2, limbs);
        ein_add_centred_binomial(residues, words, 1, count, 21, PRIMES, 2);
        uint64_t *quotients = alloc(2 * count * 8);  /* residues as two terms of `count` coefficients */
        ein_shoup(residues, 2 * count, PRIMES[0], quotients);
        ein_dot_mod(residues, residues, 2, count, residues, residues, PRIMES[0], out);
        ein_multiply_mod(residues, residues, quotients, count, PRIMES[0], out);
        free(quotients);
        free(bytes), free(small), free(positions), free(residues), free(words), free(out), free(scratch), free(limbs);
        free(values), free(back), free(fractions);
    }
    /* The transforms on two rows of each power-of-two degree (any residues serve as tables for bounds). */
    for (size_t n = 2; n <= 64; n <<= 1) {
        uint64_t *polys = alloc(2 * n * 8), *roots = alloc(n * 8), *quotients = alloc(n * 8);
        for (size_t i = 0; i < n; i++) {
            roots[i] = next_word(&state) % PRIMES[0];
            polys[i] = next_word(&state) % PRIMES[0];
            polys[n + i] = next_word(&state) % PRIMES[0];
        }
        ein_shoup(roots, n, PRIMES[0], quotients);
        ein_ntt_forward(polys, 2, n, PRIMES[0], roots, quotients);
        ein_ntt_inverse(polys, 2, n, PRIMES[0], roots, quotients, roots[1], quotients[1]);
        free(polys), free(roots), free(quotients);
    }
    puts("bounds kept");
    return 0;
}
