"""A square network's rounds: the server's half, the client's half, and the messages between them.

Round 0 carries the encrypted inputs; round l >= 1 carries Enc(z^2) and Enc(B^d z) of the masked
values z = h + r the previous reply let the client decrypt (`bfv.network_plan`). Each round message is
one single-image v1 request per plaintext modulus (`bfv.wire`, each with its own seed), and every
round but the first ends with the token the previous reply carried; each reply is a token (but the
last) followed by one single-image reply per modulus:

    request: request_t0 || request_t1 || ... [|| token]
    reply:   [token ||] reply_t0 || reply_t1 || ...

A batch round has the same shape with batch requests and replies, repeated for each block of up to N
samples (every block but the last holds N; `NetworkPublicPlan.batch_blocks` blocks at most), block
by block, each with masks of its own.

The token seals, under a key only the service knows (ChaCha20-Poly1305), the seed of the masks the
reply used, the round it is valid for and its expiry; the client's key id and the model are its
associated data. So replicas keep no state between rounds, a token opens only for its key, model
and round, and the masks never leave the service. A client can present a token more than once,
which tells it nothing a fresh round 0 would not (docs/security.md).
"""

from __future__ import annotations

import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bfv.encryption import ClientKeys
from bfv.evaluation import prepare_public_key
from bfv.network_batch import BatchRound
from bfv.network_plan import NetworkPlan, NetworkPublicPlan, base_digits
from bfv.plan import PublicPlan
from bfv.rerandomize import PreparedKey, ZeroEncryptions
from bfv.ring import (add_mod, dot_mod, expand_uniform, from_signed, moduli_column, random_error, random_flooding,
                      residue_fraction, scale_messages, small_dot_mod)
from bfv.seal_ring import SealRing
from bfv.wire import Kind, Request, WireError, read_request, reply_size, request_size, write_switched_reply

_TOKEN_PAYLOAD = struct.Struct("<BQ32s")  # round, expiry (ms since the epoch), mask seed
_NONCE_BYTES = 12
TOKEN_BYTES = _NONCE_BYTES + _TOKEN_PAYLOAD.size + 16  # nonce, sealed payload, tag
MASK_SEED_BYTES = 32


def single_reply_size(plan: PublicPlan) -> int:
    """Bytes of a single-image reply of `plan`."""
    return reply_size(plan.single_reply_values, plan.single_reply_bits)


def batch_reply_size(plan: PublicPlan) -> int:
    """Bytes of a batch reply of `plan`: c0 and c1 of every output."""
    return reply_size(plan.n_outputs * 2 * plan.degree, plan.batch_reply_bits)


def round_plans(public: NetworkPublicPlan, round_index: int, batch: bool = False) -> tuple[PublicPlan, ...]:
    """The plans, one per modulus, of a round of the single (or the batch) layout."""
    if batch and public.batch is None:
        raise WireError(public.batch_refusal or "batches of this network are not served")
    return (public.batch.rounds if batch else public.rounds)[round_index]


def round_request_size(public: NetworkPublicPlan, round_index: int, batch: bool = False, blocks: int = 1) -> int:
    """Bytes of a round's request: its requests per modulus (for each of `blocks` blocks of a batch), the token."""
    kind = Kind.BATCH if batch else Kind.SINGLE
    plans = round_plans(public, round_index, batch)
    token = TOKEN_BYTES if round_index else 0
    return blocks * sum(request_size(plan.request_shape(kind)[0], plan.params) for plan in plans) + token


def round_reply_size(public: NetworkPublicPlan, round_index: int, batch: bool = False, blocks: int = 1) -> int:
    last = round_index == len(public.rounds) - 1
    size = batch_reply_size if batch else single_reply_size
    return blocks * sum(size(plan) for plan in round_plans(public, round_index, batch)) + (0 if last else TOKEN_BYTES)


def round_blocks(public: NetworkPublicPlan, round_index: int, size: int, batch: bool = False,
                 reply: bool = False) -> int:
    """How many blocks a round's request (or reply) of `size` bytes holds: 1 for a single image, 1 to
    `batch_blocks` for a batch; WireError naming the sizes it may have otherwise."""
    measure = round_reply_size if reply else round_request_size
    most = public.batch_blocks if batch else 1
    sizes = [measure(public, round_index, batch, blocks) for blocks in range(1, most + 1)]
    if size not in sizes:
        accepted = " or ".join(map(str, sizes))
        raise WireError(f"round {round_index}'s reply is {size} bytes, {accepted} expected" if reply
                        else f"round {round_index} takes {accepted} bytes, not {size}")
    return sizes.index(size) + 1


def masks(seed: bytes, round_index: int, modulus_index: int, modulus: int, count: int, block: int = 0) -> np.ndarray:
    """`count` values uniform modulo `modulus` from the keystream of (seed, round, modulus, block of a batch):
    64-bit words, those at or above the largest multiple of the modulus rejected."""
    nonce = struct.pack("<IIQ", round_index, modulus_index, block)
    stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    limit = np.uint64((1 << 64) // modulus * modulus)
    kept: list[np.ndarray] = []
    found = 0
    while found < count:
        words = np.frombuffer(stream.update(bytes(8 * (count - found + 8))), dtype=np.uint64)
        kept.append(words[words < limit])
        found += kept[-1].size
    return np.concatenate(kept)[:count] % np.uint64(modulus)


class TokenError(ValueError):
    """A round's token does not open: another service, key, model or round, or expired."""


@dataclass(frozen=True)
class RoundTokens:
    """Seals and opens round tokens under `key` (32 bytes, shared by the replicas of one service)."""

    key: bytes
    ttl_s: float
    clock: Callable[[], float] = time.time

    def seal(self, round_index: int, seed: bytes, context: bytes) -> bytes:
        expiry = int((self.clock() + self.ttl_s) * 1000)
        nonce = os.urandom(_NONCE_BYTES)
        payload = _TOKEN_PAYLOAD.pack(round_index, expiry, seed)
        return nonce + ChaCha20Poly1305(self.key).encrypt(nonce, payload, context)

    def open(self, token: bytes, round_index: int, context: bytes) -> bytes:
        """The mask seed a token seals, if it was made for this round, key and model and is still valid."""
        try:
            payload = ChaCha20Poly1305(self.key).decrypt(token[:_NONCE_BYTES], token[_NONCE_BYTES:], context)
        except InvalidTag:
            raise TokenError("the round token was not issued by this service for this key and model (or it was "
                             "altered)") from None
        found_round, expiry, seed = _TOKEN_PAYLOAD.unpack(payload)
        if found_round != round_index:
            raise TokenError(f"the round token is for round {found_round}, not round {round_index}")
        if self.clock() * 1000 > expiry:
            raise TokenError("the round token has expired: start again from round 0")
        return seed


class RoundProducts:
    """One round's linear layer modulo one t, for one sample split over `chunks` ciphertexts.

    For each reply group g, in SEAL's NTT domain: sum over chunks s of (c0_s, a_s) * w_{g,s}, plus
    (pk0, pk1) * u_g for a fresh ternary u_g (`ring.dot_mod`, the compiled loops where built), then
    the inverse NTTs of every group in one call, fresh errors e1 and, where c0 is read, e0 (so what the
    reply carries is re-randomized as a fresh encryption of zero would make it), the intercepts and masks
    at the result positions. w_{g,s} holds, reversed at
    offset l * width, the chunk-s part of the weights of the group's l-th output, so coefficient
    l * width + width - 1 is that output's whole dot product. Splitting a sample over several
    ciphertexts lets each reply ciphertext carry `chunks` times more outputs: fewer reply bytes and
    inverse NTTs for a wide layer.
    """

    def __init__(self, public: PublicPlan, ring: SealRing, weights: np.ndarray) -> None:
        self.public, self.ring = public, ring
        self._primes = public.params.data_primes
        self._moduli = moduli_column(self._primes)
        width, degree, chunks = public.chunk_features, public.degree, public.chunks
        padded = np.zeros((weights.shape[0], chunks * width), dtype=np.int64)
        padded[:, : weights.shape[1]] = weights
        polys = np.zeros((len(public.groups) * chunks, degree), dtype=np.int64)  # (group, chunk) rows
        for index, group in enumerate(public.groups):
            for chunk in range(chunks):
                poly = polys[index * chunks + chunk]
                for slot, output in enumerate(group):
                    poly[slot * width : (slot + 1) * width] = padded[output, chunk * width : (chunk + 1) * width][::-1]
        transformed = ring.ntt_rows(from_signed(polys, self._primes))  # (rows, k, N)
        # Per prime, each group's chunks contiguous: (k, groups, chunks, N).
        self._weights = np.ascontiguousarray(transformed.reshape(len(public.groups), chunks, len(self._primes),
                                                                 degree).transpose(2, 0, 1, 3))
        self._positions = public.result_positions(0)

    def scaled(self, values: np.ndarray) -> np.ndarray:
        """round(Q * v / t) residues (k, outputs) of values v in [0, t) (outputs,), in the groups' output order."""
        order = [output for group in self.public.groups for output in group]
        ordered = np.asarray(values, dtype=np.uint64)[order]
        return scale_messages(ordered, self._primes, self.public.params.plain_modulus)

    def reply(self, c0: np.ndarray, seed: bytes, key: NetworkKey, noise: Callable[[], GroupNoise],
              plain: np.ndarray) -> bytes:
        """The single-image reply to the chunks (c0 (chunks, k, N) in the NTT domain, as the client sends it;
        a_s = expand_uniform(seed, s)), with `plain` (k, outputs) = `scaled(intercepts)` added to the scores;
        `noise()` gives each group its fresh u and errors."""
        public, ring, primes = self.public, self.ring, self._primes
        degree, chunks, groups = public.degree, public.chunks, public.groups
        # (k, 2, chunks, N): per prime, the chunks' c0 and a in the NTT domain
        inputs = np.empty((len(primes), 2, chunks, degree), dtype=np.uint64)
        inputs[:, 0] = c0.transpose(1, 0, 2)
        for chunk in range(chunks):
            inputs[:, 1, chunk] = expand_uniform(seed, chunk, primes, degree)
        fresh = [noise() for _ in groups]
        totals = np.empty((len(groups), 2, len(primes), degree), dtype=np.uint64)
        for index, group_noise in enumerate(fresh):
            for row, prime in enumerate(primes):
                weights = self._weights[row, index]
                for poly in range(2):  # c0: sum c0_s * w_s + pk0 * u; c1: sum a_s * w_s + pk1 * u
                    totals[index, poly, row] = dot_mod(inputs[row, poly], weights,
                                                       (group_noise.u[row], key.ntt[poly, row]), prime)
        # Every group's c0 and c1 in one call: (groups, 2, k, N) coefficients.
        polys = ring.ntt_rows(totals.reshape(-1, len(primes), degree), inverse=True).reshape(totals.shape)
        c1_fractions = residue_fraction(polys[:, 1], primes)  # (groups, N)
        fractions = np.empty(public.single_reply_values)
        start = outputs_seen = 0
        for index, (group, group_noise) in enumerate(zip(groups, fresh)):
            count = len(group)
            scores = add_mod(polys[index, 0][:, self._positions[:count]], plain[:, outputs_seen : outputs_seen + count],
                             self._moduli)
            if public.flooding_bits:
                scores = add_mod(scores, random_flooding((count,), public.flooding_bits, primes), self._moduli)
            # e0 where c0 is read (the reply carries no other coefficient of it), e1 everywhere: as fractions of Q
            e0 = group_noise.errors[degree : degree + count]
            fractions[start : start + count] = residue_fraction(scores, primes) + e0
            fractions[start + count : start + count + degree] = c1_fractions[index] + group_noise.errors[:degree]
            start, outputs_seen = start + count + degree, outputs_seen + count
        return write_switched_reply(Kind.SINGLE, 1, public.single_reply_bits, fractions)


@dataclass(frozen=True)
class GroupNoise:
    """The randomness of one single-image reply group, independent of the key and of t, so drawn between
    requests: a ternary u in the NTT domain (k, N) for its encryption of zero, and its errors e1 (N) and
    e0 (where c0 is read), centred binomial, as the fractions e / Q the reply adds to its own."""

    u: np.ndarray
    errors: np.ndarray


@dataclass(frozen=True)
class NetworkKey:
    """A client's public key prepared once: (pk0, pk1) in the NTT domain (2, k, N), the same for every t."""

    key_id: str
    ntt: np.ndarray
    nbytes: int
    prepared: PreparedKey  # for the batch layout's encryptions of zero


class NetworkEvaluator:
    """The server's half of a network's rounds: no key but the client's public key, no state between rounds."""

    def __init__(self, plan: NetworkPlan, tokens: RoundTokens, noise_pool: int = 24) -> None:
        """`noise_pool` groups' fresh u and errors (`GroupNoise`) are kept ready, made between requests by
        `make_ahead` (four images' worth for the bundled network: 6 groups over its two rounds)."""
        self.plan, self.tokens = plan, tokens
        public = plan.public
        self._rings = [SealRing(round_plan.params) for round_plan in public.rounds[0]]  # one per modulus
        # Round 0's weights: the columns of the inputs it carries (`NetworkPublicPlan.sent_features`).
        self._first_weights = public.sent(plan.network.weights[0])
        self._first = [RoundProducts(round_plan, ring, self._first_weights)
                       for round_plan, ring in zip(public.rounds[0], self._rings)]
        # Each layer's biases modulo each t: [round][modulus] (outputs,) int64.
        self._biases = [[np.array([int(b) % t for b in bias], dtype=np.int64) for t in public.moduli]
                        for bias in plan.network.biases]
        # The u of the encryptions of zero depend neither on t nor on the key: one source for every round.
        self._zeros = ZeroEncryptions(self._rings[0], 0, np.zeros(0, dtype=np.int64))
        self._ready: deque[GroupNoise] = deque()
        self._pool = noise_pool
        self._noise_errors = public.degree + max(len(group) for plans in public.rounds for round_plan in plans
                                                 for group in round_plan.groups)
        self._inverse_q = 1.0 / public.params.data_modulus
        self._batch: list[list[BatchRound]] | None = None

    @property
    def compiled_transforms(self) -> bool:
        """Whether the rings' NTTs run compiled (else in SEAL: the tables did not match, or no kernels)."""
        return all(ring.compiled_transforms for ring in self._rings)

    def _batch_rounds(self) -> list[list[BatchRound]]:
        """The batch layout's rounds [round][modulus], prepared at the first batch."""
        if self._batch is None:
            public, network = self.plan.public, self.plan.network
            layout = public.batch
            self._batch = [[BatchRound(plan, ring, network.weights[index] if index else self._first_weights,
                                       self._biases[index][m], layout.digit_bits, layout.digits, first=index == 0)
                            for m, (plan, ring) in enumerate(zip(plans, self._rings))]
                           for index, plans in enumerate(layout.rounds)]
        return self._batch

    def _noise(self) -> GroupNoise:
        return self._ready.popleft() if self._ready else self._fresh_noise()

    def _fresh_noise(self) -> GroupNoise:
        return GroupNoise(self._zeros.ternary_ntt(), random_error((self._noise_errors,)) * self._inverse_q)

    def make_ahead(self) -> bool:
        """One step of filling the pool of groups' randomness (two groups'); whether more steps remain."""
        if len(self._ready) >= self._pool:
            return False
        self._ready.extend((self._fresh_noise(), self._fresh_noise()))
        return len(self._ready) < self._pool

    def prepare_key(self, blob: bytes) -> NetworkKey:
        ring = self._rings[0]
        key = prepare_public_key(ring, blob, 0)
        public = np.array(ring.polys(key.public_ntt))  # (pk0, pk1) in the NTT domain (2, k, N)
        return NetworkKey(key_id=key.key_id, ntt=public, nbytes=public.nbytes + key.nbytes, prepared=key)

    def _masks(self, seed: bytes, round_index: int, batch: bool, block: int = 0) -> list[np.ndarray]:
        """The masks of a round's reply, per modulus: (outputs,), or (outputs, N) for a batch block's slots."""
        public = self.plan.public
        outputs = public.rounds[round_index][0].n_outputs
        if not batch:
            return [masks(seed, round_index, index, t, outputs) for index, t in enumerate(public.moduli)]
        return [masks(seed, round_index, index, t, outputs * public.degree, block).reshape(outputs, public.degree)
                for index, t in enumerate(public.moduli)]

    def _requests(self, round_index: int, body: bytes | memoryview, key: NetworkKey, batch: bool
                  ) -> list[list[Request]]:
        """The round's requests, per block (one for a single image) and modulus, each checked."""
        public = self.plan.public
        blocks = round_blocks(public, round_index, len(body), batch)
        kind = Kind.BATCH if batch else Kind.SINGLE
        view, offset, found = memoryview(body), 0, []
        for block in range(blocks):
            requests: list[Request] = []
            for plan in round_plans(public, round_index, batch):
                ciphertexts, most = plan.request_shape(kind)
                size = request_size(ciphertexts, plan.params)
                request = read_request(bytes(view[offset : offset + size]), kind, ciphertexts, most, plan.params)
                if request.key_id != key.key_id:
                    raise WireError("the round's requests name another public key than the one it is scored with")
                if requests and request.images != requests[0].images:
                    raise WireError("the round's requests declare different numbers of samples")
                requests.append(request)
                offset += size
            if block < blocks - 1 and requests[0].images != public.degree:
                raise WireError(f"every block of a batch but the last holds {public.degree} samples, not "
                                f"{requests[0].images}")
            found.append(requests)
        return found

    def score_round(self, round_index: int, body: bytes | memoryview, key: NetworkKey, context: bytes,
                    batch: bool = False) -> bytes:
        """The reply to round `round_index` (a body of `round_request_size`, for some number of blocks in a
        batch) of the single (or the batch) layout, for the model, key and layout `context` names (the
        tokens' associated data)."""
        public = self.plan.public
        blocks = self._requests(round_index, body, key, batch)
        seed = self.tokens.open(bytes(memoryview(body)[-TOKEN_BYTES:]), round_index, context) if round_index else None
        last = round_index == len(public.rounds) - 1
        next_seed = None if last else os.urandom(MASK_SEED_BYTES)
        replies = [] if last else [self.tokens.seal(round_index + 1, next_seed, context)]
        for block, requests in enumerate(blocks):
            previous = None if seed is None else self._masks(seed, round_index - 1, batch, block)
            next_masks = None if next_seed is None else self._masks(next_seed, round_index, batch, block)
            for index, request in enumerate(requests):
                before = None if previous is None else previous[index]
                after = None if next_masks is None else next_masks[index]
                if batch:
                    layer = self._batch_rounds()[round_index][index]
                    replies.append(layer.reply(request, key.prepared, self._zeros, before, after, last))
                else:
                    replies.append(self._single_reply(round_index, index, request, key, before, after))
        return b"".join(replies)

    def _single_reply(self, round_index: int, index: int, request: Request, key: NetworkKey,
                      previous: np.ndarray | None, next_masks: np.ndarray | None) -> bytes:
        """The single-image reply of round `round_index` modulo t_index, given the previous round's masks
        (round >= 1) and the next round's (all rounds but the last)."""
        plan, ring = self.plan.public.rounds[round_index][index], self._rings[index]
        t = plan.params.plain_modulus
        intercepts = self._biases[round_index][index]  # modulo t, int64
        if round_index:  # Q (z - r)^2 = Q z^2 - 2 sum_d Q diag(r_d) B^d z + Q r^2
            weights, public = self.plan.network.weights[round_index], self.plan.public
            r = previous.astype(np.int64)
            digits = base_digits(r, public.digit_bits, public.digits)
            layer = np.concatenate([weights] + [-2 * weights * digit[None, :] for digit in digits], axis=1)
            squares = (previous.astype(np.uint64) ** 2 % np.uint64(t)).astype(np.int64)  # r < t < 2^32: r^2 < 2^64
            intercepts = (intercepts + small_dot_mod(weights, squares, t)) % t
            products = RoundProducts(plan, ring, layer)
        else:
            products = self._first[index]
        if next_masks is not None:
            intercepts = (intercepts + next_masks.astype(np.int64)) % t
        return products.reply(request.c0, request.seed, key, self._noise, products.scaled(intercepts))


class NetworkKeys:
    """The client's half: one secret key, its public key, and a key view per round and modulus."""

    def __init__(self, plan: NetworkPublicPlan, *, secret: bytes | None = None,
                 public_key: bytes | None = None) -> None:
        self.plan = plan
        first = ClientKeys(plan.rounds[0][0], secret=secret, public_key=public_key)
        exported = first.export_secret()
        self._keys = [[first if (r, m) == (0, 0) else
                       ClientKeys(round_plan, secret=exported, public_key=first.public_key)
                       for m, round_plan in enumerate(plans)] for r, plans in enumerate(plan.rounds)]
        self.public_key, self.key_id = first.public_key, first.key_id
        self.export_secret = first.export_secret
        self._batch_keys: list[list[ClientKeys]] | None = None

    def _keys_for(self, batch: bool) -> list[list[ClientKeys]]:
        """The key views [round][modulus] of the single (or the batch) layout; the batch's made at first use."""
        if not batch:
            return self._keys
        if self._batch_keys is None:
            if self.plan.batch is None:
                raise WireError(self.plan.batch_refusal or "batches of this network are not served")
            secret = self.export_secret()
            self._batch_keys = [[ClientKeys(round_plan, secret=secret, public_key=self.public_key)
                                 for round_plan in plans] for plans in self.plan.batch.rounds]
        return self._batch_keys

    def _blocks(self, samples: int) -> list[slice]:
        """The blocks of N samples (the last one shorter) of a batch of `samples`."""
        most, degree = self.plan.max_batch, self.plan.degree
        if not 1 <= samples <= most:
            raise WireError(f"a batch of this network holds 1 to {most} samples, not {samples}")
        return [slice(start, min(start + degree, samples)) for start in range(0, samples, degree)]

    def first_batch_request(self, inputs: np.ndarray) -> bytes:
        """Round 0 of the batch layout for up to `max_batch` samples of integer inputs (samples, n_features):
        the inputs the first layer weighs (`NetworkPublicPlan.sent_features`), block by block."""
        sent = self.plan.sent(inputs)
        keys = self._keys_for(True)[0]
        return b"".join(view.encrypt_batch(sent[block]) for block in self._blocks(len(sent)) for view in keys)

    def first_request(self, inputs: np.ndarray) -> bytes:
        """Round 0 for one sample of integer inputs (n_features,): those the first layer weighs."""
        sent = self.plan.sent(inputs)
        return b"".join(keys.encrypt_single(sent, ntt_c0=True) for keys in self._keys[0])

    def _residues(self, round_index: int, reply: bytes, batch: bool = False) -> tuple[bytes, list[np.ndarray]]:
        """The round's token and its values modulo each t: (outputs,), or (samples, outputs) for a batch
        (its blocks' samples in order)."""
        public = self.plan
        blocks = round_blocks(public, round_index, len(reply), batch, reply=True)
        last = round_index == len(public.rounds) - 1
        token, offset = (b"", 0) if last else (reply[:TOKEN_BYTES], TOKEN_BYTES)
        views = self._keys_for(batch)[round_index]
        parts: list[list[np.ndarray]] = [[] for _ in views]
        for _ in range(blocks):
            for index, keys in enumerate(views):
                plan = keys.plan
                size = batch_reply_size(plan) if batch else single_reply_size(plan)
                part = reply[offset : offset + size]
                values = keys.decrypt_batch(part) if batch else keys.decrypt_single(part)
                parts[index].append(np.mod(values, plan.params.plain_modulus))
                offset += size
        return token, [np.concatenate(found) if batch else found[0] for found in parts]

    def next_request(self, round_index: int, reply: bytes, batch: bool = False) -> bytes:
        """Round `round_index + 1` from round `round_index`'s reply: z^2 and B^d z under each modulus, then
        the token."""
        token, masked = self._residues(round_index, reply, batch)
        keys = self._keys_for(batch)[round_index + 1]
        # These rounds only multiply their ciphertexts: c0 comes in the NTT domain (`RoundProducts`,
        # `bfv.network_batch`).
        if not batch:
            return b"".join(view.encrypt_single(self.plan.masked_features(z, t), ntt_c0=True)
                            for view, z, t in zip(keys, masked, self.plan.moduli)) + token
        return b"".join(view.encrypt_batch(self.plan.masked_features(z[block], t, True), ntt_c0=True)
                        for block in self._blocks(len(masked[0]))
                        for view, z, t in zip(keys, masked, self.plan.moduli)) + token

    def scores(self, reply: bytes) -> list[int]:
        """The integer scores from the last round's reply."""
        _, residues = self._residues(len(self.plan.rounds) - 1, reply, False)
        return self.plan.combine(residues)

    def batch_scores(self, reply: bytes) -> list[list[int]]:
        """The integer scores (samples, outputs) from the batch layout's last reply."""
        _, residues = self._residues(len(self.plan.rounds) - 1, reply, True)
        return [self.plan.combine(list(values)) for values in zip(*residues)]
