"""A key pair rebuilt from its stored secret and public key: the same pair, and refused when the public
key is not the secret's or not for these parameters (`ClientKeys(plan, secret=..., public_key=...)`),
and the key file that keeps it (`client.keyfile`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from bfv.encryption import ClientKeys, StoredKeyError
from bfv.evaluation import Evaluator
from bfv.inputs import InputEncoding
from bfv.plan import Plan, build_plan
from bfv.wire import Kind, read_request
from client.keyfile import default_key_file, kept_keys, load_keys, save_keys
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model


@pytest.fixture(scope="module", params=["compact", "flooded"])
def plan(request: pytest.FixtureRequest) -> Plan:
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    return build_plan(model, InputEncoding.pixels(model.n_features), request.param)


def test_a_restored_pair_is_the_same_pair_and_decrypts_what_the_service_scores(plan: Plan) -> None:
    keys = ClientKeys(plan.public)
    restored = ClientKeys(plan.public, secret=keys.export_secret(), public_key=keys.public_key)
    assert (restored.key_id, restored.public_key, restored.export_secret()) == \
        (keys.key_id, keys.public_key, keys.export_secret())
    # The server re-randomizes replies with the public key: they decrypt under the restored secret.
    evaluator = Evaluator(plan, mask_pool_size=1)
    key = evaluator.prepare_key(keys.public_key)
    image = np.arange(784, dtype=np.int64) % 256
    request = read_request(restored.encrypt_single(image), Kind.SINGLE, 1, 1, plan.public.params)
    np.testing.assert_array_equal(restored.decrypt_single(evaluator.score_single(request, key)),
                                  plan.model.scores(image[None])[0])


def test_a_public_key_of_another_secret_or_other_parameters_is_refused(plan: Plan) -> None:
    keys, other = ClientKeys(plan.public), ClientKeys(plan.public)
    with pytest.raises(StoredKeyError, match=r"does not belong to the stored secret key \(pk0 \+ a\*s is not"):
        ClientKeys(plan.public, secret=other.export_secret(), public_key=keys.public_key)
    with pytest.raises(StoredKeyError, match="not one for these parameters"):
        ClientKeys(plan.public, secret=keys.export_secret(), public_key=keys.public_key[:-1])
    tampered = bytearray(keys.public_key)
    tampered[-100] ^= 0x40
    with pytest.raises(StoredKeyError):
        ClientKeys(plan.public, secret=keys.export_secret(), public_key=bytes(tampered))
    with pytest.raises(StoredKeyError, match=f"is {plan.public.degree} bytes of 0, 1 or 2; this one is"):
        ClientKeys(plan.public, secret=keys.export_secret()[1:], public_key=keys.public_key)
    with pytest.raises(ValueError, match="needs both"):
        ClientKeys(plan.public, secret=keys.export_secret())


def test_the_key_file_is_the_owner_s_alone_and_kept(plan: Plan, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = default_key_file("http://127.0.0.1:8000/", None, None, plan.public)
    assert path == default_key_file("http://127.0.0.1:8000", None, None, plan.public)
    assert path.parent == tmp_path / "cache" / "encrypted-scoring" and len(path.stem) == 64
    assert path != default_key_file("http://127.0.0.1:8000", "other", None, plan.public)
    keys = kept_keys(path, plan.public)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert kept_keys(path, plan.public).key_id == keys.key_id
    assert save_keys(path, ClientKeys(plan.public)) == path and load_keys(path, plan.public).key_id == keys.key_id
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no temporary file left

    stored = json.loads(path.read_text())
    stored["parameters"]["plain_modulus"] += 2
    path.write_text(json.dumps(stored))
    with pytest.raises(StoredKeyError, match=f"{path} holds a key pair for other parameters"):
        load_keys(path, plan.public)
    path.write_text("not json")
    with pytest.raises(StoredKeyError, match="cannot read the key pair"):
        kept_keys(path, plan.public)
