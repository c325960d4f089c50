"""The fast engine: the Azure ML contract evaluated with SEAL 4 (seal-python), same client, same answers.

Same parameters as the tutorial (CKKS, N=8192, primes of 60/40/40/60 bits, scale 2^40), a cheaper
circuit. EIServer multiplies the input by each class's weights and rotates-and-sums each product
over all 4,096 slots: 12 key switchings per class at the middle level. Here:

1. the input (d features, real) drops one level, then is copied into every block of
   B = next power of two >= d slots (log2(4096 / B) rotations, once);
2. one plaintext product with complex weights puts 2 x 4096 / B outputs side by side: output
   2k's weights in the real part of block k, output 2k+1's in the imaginary part;
3. after rescaling (to the last level, where a rotation costs least) the product is
   rotated-and-summed within blocks: log2 B rotations for all its outputs at once;
4. block k is rotated to slot 0 (one rotation from an earlier block's), and for the output in the
   imaginary part multiplied by the monomial -X^(N/2), which turns slot 0 into -i times itself at
   no cost in noise or levels; so each reply carries its score in the real part of slot 0, where
   the client reads it.

For MNIST (784 features, 10 classes): 2 + 2 x 10 + 3 rotations instead of EIServer's 120. Replies
decrypt to EIServer's scores (up to CKKS noise, ~1e-6) and are written in the client's SEAL 3.5
format. Other slots of a reply hold partial sums, as EIServer's replies do.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import seal

from model.loading import LinearModel
from service.storage.keystore import PreparedKeys
from service.azureml.seal_wire import (
    CiphertextData,
    expand_seed,
    galois_row,
    parse_ciphertext,
    read_client_ciphertext,
    read_tutorial_keys,
    write_ciphertext_members,
    write_kswitch_keys,
    write_object,
)
from service.azureml.parameters import (
    DEGREE,
    MAX_INFLATED_CIPHERTEXT,
    PRIME_BITS,
    SLOTS,
    ciphertexts_for,
    tutorial_parameters,
)
from service.errors import Unprocessable
from service.azureml.seal_format import SealFormatError, decode_base64, read_object

WEIGHT_SCALE = 2.0**40
CLIENT_VERSION = (3, 5)
SEAL4_VERSIONS = {(4, minor) for minor in range(10)}


class Seal4Engine:
    def __init__(self, model: LinearModel) -> None:
        params = tutorial_parameters()
        self._context = params.context
        self._encoder = seal.CKKSEncoder(self._context)
        self._evaluator = seal.Evaluator(self._context)
        self._data_moduli, self._key_moduli = params.data_moduli, params.key_moduli
        self._first_parms_id, self._key_parms_id = params.first_parms_id, params.key_parms_id
        self._product_parms_id = self._context.first_context_data().next_context_data().parms_id()
        self._last_parms_id = self._context.last_parms_id()

        self._outputs = model.n_outputs
        self.expected_ciphertexts = ciphertexts_for(model.n_features)
        self._block = SLOTS if self.expected_ciphertexts > 1 else 1 << max(0, (model.n_features - 1).bit_length())
        self._blocks = SLOTS // self._block
        self._per_group = 2 * self._blocks
        self._replication_steps = [SLOTS >> i for i in range(1, int(math.log2(self._blocks)) + 1)]
        self._sum_steps = [1 << i for i in range(int(math.log2(self._block)))]
        self._weights = [self._group_weights(model, group) for group in range(self._groups)]
        self._bias_vectors = [self._group_bias(model, group) for group in range(self._groups)]
        self._bias_plaintexts: dict[tuple[int, float], seal.Plaintext] = {}
        # The monomial -X^(N/2): -i in the even slots (slot 0 among them), +i in the odd ones, in SEAL's
        # slot order. As a monomial it encodes exactly at scale 1, so multiplying by it costs no level.
        self._minus_i = self._encoder.encode_complex(np.where(np.arange(SLOTS) % 2 == 0, -1j, 1j), 1.0)
        self._evaluator.mod_switch_to_inplace(self._minus_i, self._last_parms_id)
        # Every rotation `predict` makes, so the only Galois keys kept of a client's (all among its
        # `ROTATION_STEPS`). Moving block k to slot 0 rotates by a power of two from B to 2048: a replication step.
        self._rotation_steps = sorted({*self._replication_steps, *self._sum_steps})

    @property
    def _groups(self) -> int:
        return math.ceil(self._outputs / self._per_group)

    def _group_layout(self, group: int) -> list[tuple[int, int, complex]]:
        """(output, block, part) for each output of a group: part 1 is the real, 1j the imaginary part."""
        outputs = range(group * self._per_group, min(self._outputs, (group + 1) * self._per_group))
        return [(output, position // 2, 1j if position % 2 else 1) for position, output in enumerate(outputs)]

    def _group_weights(self, model: LinearModel, group: int) -> list[seal.Plaintext]:
        """One plaintext per input ciphertext, at the product level: each output's weights in its block and part."""
        plaintexts = []
        for index in range(self.expected_ciphertexts):
            features = model.coef[:, index * SLOTS : (index + 1) * SLOTS]
            vector = np.zeros(SLOTS, dtype=complex)
            for output, block, part in self._group_layout(group):
                vector[block * self._block : block * self._block + features.shape[1]] += part * features[output]
            plaintext = self._encoder.encode_complex(vector, WEIGHT_SCALE)
            self._evaluator.mod_switch_to_inplace(plaintext, self._product_parms_id)
            plaintexts.append(plaintext)
        return plaintexts

    def _group_bias(self, model: LinearModel, group: int) -> np.ndarray:
        vector = np.zeros(SLOTS, dtype=complex)
        for output, block, part in self._group_layout(group):
            vector[block * self._block] += part * model.intercept[output]
        return vector

    def _bias_plaintext(self, group: int, scale: float) -> seal.Plaintext:
        """The group's intercepts at the last level and at the product's scale (encoded once per scale)."""
        key = (group, scale)
        if key not in self._bias_plaintexts:
            plaintext = self._encoder.encode_complex(self._bias_vectors[group], scale)
            self._evaluator.mod_switch_to_inplace(plaintext, self._last_parms_id)
            self._bias_plaintexts[key] = plaintext
        return self._bias_plaintexts[key]

    # Keys ---------------------------------------------------------------------------------------

    def prepare_keys(self, public_keys: bytes) -> PreparedKeys:
        """The Galois keys of this circuit's rotations from the tutorial client's blob (GaloisKeys + RelinKeys),
        seeds expanded, loaded into SEAL 4. Only those rows are kept, so a blob costs what an honest one
        does however it is crafted (`read_tutorial_keys` refuses rows the client never fills)."""
        keys = read_tutorial_keys(public_keys, {galois_row(step) for step in self._rotation_steps})
        missing = [step for step in self._rotation_steps if galois_row(step) not in keys]
        if missing:
            raise SealFormatError(f"the keys lack rotations by {missing}")
        for row in keys.values():
            for key in row:
                expand_seed(key, self._key_moduli)
        try:
            galois = self._context.from_galois_str(write_kswitch_keys(keys, self._key_parms_id, CLIENT_VERSION))
        except (RuntimeError, ValueError) as exc:
            raise SealFormatError(f"SEAL refused the Galois keys ({exc})") from None
        return PreparedKeys(galois, sum(key.polys.nbytes for row in keys.values() for key in row))

    # Scoring ------------------------------------------------------------------------------------

    def _load_ciphertext(self, text: str) -> seal.Ciphertext:
        try:
            ciphertext = read_client_ciphertext(decode_base64(text), MAX_INFLATED_CIPHERTEXT)
            expand_seed(ciphertext, self._data_moduli)
            members = write_ciphertext_members(ciphertext, self._first_parms_id, CLIENT_VERSION)
            return self._context.from_cipher_str(write_object(members, CLIENT_VERSION))
        except SealFormatError as exc:
            raise Unprocessable(f"the ciphertext is malformed: {exc}") from None
        except (RuntimeError, ValueError) as exc:
            raise Unprocessable(f"SEAL refused the ciphertext ({exc})") from None

    def _rotate_and_sum(self, ciphertext: seal.Ciphertext, steps: list[int], galois: seal.GaloisKeys) -> None:
        for step in steps:
            self._evaluator.add_inplace(ciphertext, self._evaluator.rotate_vector(ciphertext, step, galois))

    def predict(self, ciphertexts: list[str], keys: PreparedKeys) -> list[str]:
        if len(ciphertexts) != self.expected_ciphertexts:
            raise Unprocessable(
                f"the model takes {self.expected_ciphertexts} ciphertext(s); the request has {len(ciphertexts)}")
        galois = keys.value
        evaluator = self._evaluator
        inputs = [self._load_ciphertext(text) for text in ciphertexts]
        for ciphertext in inputs:
            evaluator.mod_switch_to_inplace(ciphertext, self._product_parms_id)
            self._rotate_and_sum(ciphertext, self._replication_steps, galois)
        replies: list[str] = []
        for group in range(self._groups):
            product = evaluator.multiply_plain(inputs[0], self._weights[group][0])
            for ciphertext, weights in zip(inputs[1:], self._weights[group][1:]):
                evaluator.add_inplace(product, evaluator.multiply_plain(ciphertext, weights))
            evaluator.rescale_to_next_inplace(product)
            self._rotate_and_sum(product, self._sum_steps, galois)
            evaluator.add_plain_inplace(product, self._bias_plaintext(group, product.scale()))
            at_slot_zero = {0: product}
            for output, block, part in self._group_layout(group):
                if block not in at_slot_zero:
                    # Block k is block (k without its lowest bit) rotated once more.
                    lowest = block & -block
                    at_slot_zero[block] = evaluator.rotate_vector(at_slot_zero[block - lowest], lowest * self._block,
                                                                  galois)
                reply = at_slot_zero[block]
                if part != 1:
                    reply = evaluator.multiply_plain(reply, self._minus_i)
                replies.append(self._to_client_format(reply))
        return replies

    @staticmethod
    def _to_client_format(ciphertext: seal.Ciphertext) -> str:
        """A SEAL 4 ciphertext as the base64 SEAL 3.5 object the tutorial's client decrypts."""
        header, payload = read_object(ciphertext.to_string(), 2 * MAX_INFLATED_CIPHERTEXT, SEAL4_VERSIONS)
        data: CiphertextData = parse_ciphertext(payload, header.version, DEGREE, len(PRIME_BITS))
        members = write_ciphertext_members(data, payload[:32], CLIENT_VERSION)
        return base64.b64encode(write_object(members, CLIENT_VERSION)).decode("ascii")
