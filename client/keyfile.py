"""A client's key pair kept across runs, so that a hundred runs use one key on the service.

The service keeps at most MAX_KEYS_PER_IDENTITY public keys per identity, each for KEY_TTL_DAYS,
and beyond that replaces the least recently stored; storing the same key again renews it and does
not count twice. A client that made a key pair each run would push out the identity's other keys
(those of its other programs, models and machines) after a few runs; one that keeps its pair
uploads the same public key each time. The pair lives in one file, readable by its owner only
(mode 0600, in a folder of mode 0700), as JSON:

    {"format": "encrypted-scoring-key-pair-1", "parameters": {profile, degree, primes, plain modulus},
     "key_id": ..., "secret_key": base64 (N bytes 0, 1, 2), "public_key": base64 (bfv.wire)}

By default the file is `$XDG_CACHE_HOME/encrypted-scoring/<sha256>.key` (`~/.cache` without
XDG_CACHE_HOME), the hash taken over the service's URL, the model's name and version as the caller
named them, and the parameters the service announced: another service, model or parameter set
gets its own pair. A file made for other parameters is refused (`StoredKeyError`), never replaced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path

from bfv.encryption import ClientKeys, StoredKeyError
from bfv.network_plan import NetworkPublicPlan
from bfv.network_rounds import NetworkKeys
from bfv.plan import PublicPlan

Plan = PublicPlan | NetworkPublicPlan
Keys = ClientKeys | NetworkKeys


def keys_for(plan: Plan, *, secret: bytes | None = None, public_key: bytes | None = None) -> Keys:
    """A key pair for a linear model's plan or a square network's (a new one without `secret`)."""
    keys = NetworkKeys if isinstance(plan, NetworkPublicPlan) else ClientKeys
    return keys(plan, secret=secret, public_key=public_key)

KEY_FILE_FORMAT = "encrypted-scoring-key-pair-1"
CACHE_FOLDER = "encrypted-scoring"


def parameters_of(plan: Plan) -> dict:
    """The parameters a key pair is made for (a key works for any model with these)."""
    params = plan.params
    return {"profile": params.profile, "poly_modulus_degree": params.degree,
            "coeff_modulus": list(params.data_primes), "special_modulus": list(params.extra_primes),
            "plain_modulus": params.plain_modulus}


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/encrypted-scoring, or ~/.cache/encrypted-scoring (XDG: a relative value is ignored)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / CACHE_FOLDER


def default_key_file(url: str, model: str | None, version: str | None, plan: Plan) -> Path:
    """The cached key pair's file for this service URL, model, version and parameter set."""
    identity = {"url": url.rstrip("/"), "model": model, "version": version, "parameters": parameters_of(plan)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return cache_folder() / f"{digest}.key"


def _describe(parameters: dict) -> str:
    return (f"profile {parameters.get('profile')}, N = {parameters.get('poly_modulus_degree')}, "
            f"t = {parameters.get('plain_modulus')}")


def load_keys(path: Path, plan: Plan) -> Keys:
    """The key pair stored in `path`, checked against `plan`'s parameters and against itself."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("format") != KEY_FILE_FORMAT:
            raise StoredKeyError(f"not a key file of this client (format {stored.get('format')!r})")
        parameters = stored["parameters"]
        secret, public_key = base64.b64decode(stored["secret_key"]), base64.b64decode(stored["public_key"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoredKeyError(f"{path}: cannot read the key pair: {exc}") from None
    if parameters != parameters_of(plan):
        raise StoredKeyError(f"{path} holds a key pair for other parameters ({_describe(parameters)}) than the "
                             f"service's ({_describe(parameters_of(plan))}); name another key file, or delete "
                             "this one to make a new pair")
    try:
        return keys_for(plan, secret=secret, public_key=public_key)
    except StoredKeyError as exc:
        raise StoredKeyError(f"{path}: {exc}") from None


def save_keys(path: Path, keys: Keys) -> Path:
    """Write `keys` to `path` (mode 0600; a missing folder is made with mode 0700) unless the file
    exists already: then the pair already there wins, so that concurrent first runs agree on one.
    Returns `path`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"format": KEY_FILE_FORMAT, "parameters": parameters_of(keys.plan), "key_id": keys.key_id,
                       "secret_key": base64.b64encode(keys.export_secret()).decode(),
                       "public_key": base64.b64encode(keys.public_key).decode()})
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # atomic, and refuses to replace a pair another run wrote meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: the last writer wins
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def kept_keys(path: Path, plan: Plan) -> Keys:
    """The pair in `path`, or a new one stored there first (the stored one, if another run was faster)."""
    if not path.exists():
        save_keys(path, keys_for(plan))
    return load_keys(path, plan)
