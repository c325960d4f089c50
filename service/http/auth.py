"""Authentication as Azure ML online endpoints do it: API keys or Microsoft Entra ID tokens.

Both arrive as `Authorization: Bearer <credential>`. The `Authentication` middleware checks the
credential before any route runs, so an unauthenticated request is answered 401 without its body
ever being read, and it leaves the caller's `Identity` in the ASGI scope for the routes.

API keys are compared as SHA-256 digests with `hmac.compare_digest`, against every configured key
on every request, so neither the time taken nor an early exit tells which identity (if any) a
guess came close to. Keys never appear in logs or messages. Entra tokens are validated with
PyJWT against the tenant's signing keys (`JwksCache`): signature, issuer, audience, expiry and an
optional app role; the identity is the token's `oid` (user or service principal), else `appid`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.responses import error_response
from service.settings import Settings

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
JWKS_MAX_AGE_S = 24 * 3600  # signing keys removed by the tenant stop being trusted within a day (outages: + grace)
JWKS_MAX_BYTES = 1024 * 1024  # a tenant's key set is a few kilobytes
CLOCK_SKEW_S = 60


class AuthConfigError(ValueError):
    """The authentication settings cannot work; the service refuses to start (exit code 2)."""


class AuthFailed(Exception):
    """A request's credentials are missing or not accepted; `message` names no credential.

    `error` is the RFC 6750 error code for `WWW-Authenticate` (none when credentials are missing)."""

    def __init__(self, message: str, status_code: int = 401, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.message, self.status_code, self.error = message, status_code, error


@dataclass(frozen=True)
class Identity:
    """Who is calling, decided once at the edge, and what they may do."""

    name: str
    may_batch: bool

    @property
    def namespace(self) -> str:
        """A fixed-length, path-safe name for the identity's storage (its key blobs)."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:32]


Authenticate = Callable[[str], Awaitable[str]]


def parse_api_keys(text: str, separator: str) -> dict[str, list[str]]:
    """`identity=key` entries separated by `separator`; an identity may have several keys (rotation).

    Errors say where the entry is, never what it holds: it may be a key.
    """
    keys: dict[str, list[str]] = {}
    for number, entry in enumerate(text.split(separator), start=1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        name, found, key = (part.strip() for part in entry.partition("="))
        if not found or not name or not key:
            raise AuthConfigError(f"API keys entry {number} is not of the form identity=key")
        keys.setdefault(name, []).append(key)
    return keys


def configured_api_keys(settings: Settings) -> dict[str, list[str]]:
    """API_KEYS and API_KEYS_FILE together."""
    keys = parse_api_keys(settings.api_keys.get_secret_value(), ",") if settings.api_keys else {}
    if settings.api_keys_file:
        try:
            text = Path(settings.api_keys_file).read_text()
        except OSError as exc:
            raise AuthConfigError(f"API_KEYS_FILE cannot be read: {exc.strerror}") from None
        for name, more in parse_api_keys(text, "\n").items():
            keys.setdefault(name, []).extend(more)
    return keys


class ApiKeys:
    """Bearer keys, checked in constant time against all of them."""

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self._digests = [(name, hashlib.sha256(key.encode()).digest()) for name, values in keys.items()
                         for key in values]

    async def __call__(self, credential: str) -> str:
        presented = hashlib.sha256(credential.encode()).digest()
        found = ""
        for name, digest in self._digests:  # no early exit: every key is compared every time
            match = hmac.compare_digest(presented, digest)
            found = name if match else found
        if not found:
            raise AuthFailed("the API key is not valid")
        return found


class JwksCache:
    """The tenant's signing keys by `kid`, downloaded on first use, when `JWKS_MAX_AGE_S` old, and for an
    unknown `kid`, but never twice within `min_refresh_s`, whatever the outcome: neither forged kids nor
    a failing endpoint make the service hammer the tenant or log an error per request.

    One download runs at a time, as a task that requests share rather than queue behind: a request that
    needs it waits at most until `timeout_s` after it began; a request whose key is cached and usable
    never waits (a due refresh runs in the background). If the endpoint fails, the last good set stays
    in use for `grace_s` past its max age, with a warning at each failed attempt; after that, every
    token is refused (503) until a download succeeds.

    `clock` (monotonic seconds) ages the key set and spaces the downloads, so tests can move it;
    waits use the event loop's own time.
    """

    def __init__(self, url: str, min_refresh_s: float, timeout_s: float, grace_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._url, self._min_refresh_s, self._timeout_s, self._grace_s = url, min_refresh_s, timeout_s, grace_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last good download
        self._attempted_at: float | None = None  # the last download begun, whatever its outcome
        self._failed = False  # the last finished download failed
        self._download: asyncio.Task[None] | None = None  # the one in flight
        self._deadline = 0.0  # event-loop time at which requests stop waiting for it

    async def key(self, kid: str) -> jwt.PyJWK:
        if self._due(kid):
            self._start()
        download = self._download
        if download is not None and not self._usable(kid):
            remaining = self._deadline - asyncio.get_running_loop().time()
            if remaining > 0:  # asyncio.wait does not cancel the download if this request is cancelled
                await asyncio.wait({download}, timeout=remaining)
        return self._cached(kid)

    def _age(self) -> float:
        return math.inf if self._fetched_at is None else self._clock() - self._fetched_at

    def _usable(self, kid: str) -> bool:
        return kid in self._keys and self._age() < JWKS_MAX_AGE_S + self._grace_s

    def _due(self, kid: str) -> bool:
        if self._download is not None:
            return False
        if self._attempted_at is not None and self._clock() - self._attempted_at < self._min_refresh_s:
            return False
        return kid not in self._keys or self._age() >= JWKS_MAX_AGE_S

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._attempted_at, self._deadline = self._clock(), loop.time() + self._timeout_s
        self._download = loop.create_task(self._refresh())

    def _cached(self, kid: str) -> jwt.PyJWK:
        """The key, or why not: 503 while the keys cannot be known, 401 for a `kid` the tenant does not have."""
        if self._fetched_at is not None and self._age() >= JWKS_MAX_AGE_S + self._grace_s:
            raise AuthFailed("token signing keys are unavailable (the last ones fetched are too old); "
                             "try again later", 503, error=None)
        if kid in self._keys:
            return self._keys[kid]
        if self._fetched_at is None or self._failed or self._download is not None:
            raise AuthFailed("token signing keys are unavailable; try again later", 503, error=None)
        raise AuthFailed("the token is signed by an unknown key")

    async def _refresh(self) -> None:
        """One download; never raises (its outcome is the cache's state, and nobody awaits its result)."""
        try:
            keys = await run_in_threadpool(self._fetch)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            self._failed = True
            log.error("cannot fetch the token signing keys from %s: %s", self._url, exc)
            self._report_stale()
        else:
            self._keys, self._fetched_at, self._failed = keys, self._clock(), False
            log.info("fetched %d token signing keys from %s", len(keys), self._url)
        finally:
            self._download = None

    def _report_stale(self) -> None:
        """After a failed download: say whether tokens are still checked against an old key set."""
        age_h, grace_h = self._age() / 3600, (JWKS_MAX_AGE_S + self._grace_s) / 3600
        if JWKS_MAX_AGE_S / 3600 <= age_h < grace_h:
            log.warning("using the token signing keys fetched %.1f h ago until %s answers; every token is "
                        "refused once they are %.1f h old (ENTRA_JWKS_GRACE_S)", age_h, self._url, grace_h)
        elif age_h >= grace_h and self._fetched_at is not None:
            log.error("the token signing keys fetched %.1f h ago are too old to use: every token is refused until "
                      "%s answers", age_h, self._url)

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        # The timeout bounds each socket operation: a hanging endpoint ends the download after timeout_s.
        with urllib.request.urlopen(self._url, timeout=self._timeout_s) as response:  # noqa: S310 - operator's URL
            body = response.read(JWKS_MAX_BYTES + 1)
        if len(body) > JWKS_MAX_BYTES:
            raise ValueError(f"the key set is larger than {JWKS_MAX_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("the key set is not a JSON object")
        return {key.key_id: key for key in jwt.PyJWKSet.from_dict(document).keys if key.key_id}


class EntraTokens:
    """Microsoft Entra ID access tokens (RS256 JWTs) for one tenant and audience; `clock` is `JwksCache`'s."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        tenant = settings.entra_tenant_id
        issuer = settings.entra_issuer or (tenant and f"https://login.microsoftonline.com/{tenant}/v2.0")
        jwks_url = settings.entra_jwks_url or (tenant and
                                               f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys")
        if not (issuer and jwks_url and settings.entra_audience):
            raise AuthConfigError("AUTH_MODE=entra needs ENTRA_AUDIENCE and ENTRA_TENANT_ID "
                                  "(or ENTRA_ISSUER and ENTRA_JWKS_URL)")
        self._issuer, self._audience, self._role = issuer, settings.entra_audience, settings.entra_required_role
        self._keys = JwksCache(jwks_url, settings.entra_jwks_min_refresh_s, settings.entra_jwks_timeout_s,
                               settings.entra_jwks_grace_s, clock)

    async def __call__(self, credential: str) -> str:
        try:
            header = jwt.get_unverified_header(credential)
        except jwt.DecodeError:
            raise AuthFailed("the bearer token is not a JWT") from None
        except jwt.InvalidTokenError as exc:  # a JWT whose header PyJWT refuses, e.g. an unknown `crit` extension
            raise AuthFailed(f"the token is not valid ({type(exc).__name__})") from None
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise AuthFailed("the token is not an RS256 token with a key id")
        key = await self._keys.key(header["kid"])
        try:
            claims = jwt.decode(credential, key, algorithms=["RS256"], audience=self._audience, issuer=self._issuer,
                                leeway=CLOCK_SKEW_S, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthFailed("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthFailed("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthFailed("the token is from another issuer") from None
        except jwt.InvalidTokenError as exc:
            raise AuthFailed(f"the token is not valid ({type(exc).__name__})") from None
        if self._role and not _has_role(claims, self._role):
            raise AuthFailed(f"the token lacks the app role '{self._role}'", 403, error="insufficient_scope")
        identity = claims.get("oid") or claims.get("appid")
        if not isinstance(identity, str) or not identity:
            raise AuthFailed("the token names no object id (oid) or application id (appid)")
        return identity


def _has_role(claims: dict, role: str) -> bool:
    """Exactly `role` among `roles`, which must be a list of strings: `in` on a string would match substrings."""
    roles = claims.get("roles")
    return isinstance(roles, list) and all(isinstance(name, str) for name in roles) and role in roles


def authenticator(settings: Settings) -> Authenticate | None:
    """The credential check AUTH_MODE asks for (None: `none`); raises `AuthConfigError` if it cannot work."""
    if settings.auth_mode == "none":
        log.warning("AUTH_MODE=none: every route is open to anyone who can reach the service")
        return None
    if settings.auth_mode == "entra":
        return EntraTokens(settings)
    keys = configured_api_keys(settings)
    if not keys:
        raise AuthConfigError("AUTH_MODE=key needs API keys: set API_KEYS='identity=key,...' or API_KEYS_FILE "
                              "(one identity=key per line), or AUTH_MODE=entra, or AUTH_MODE=none explicitly")
    log.info("API key authentication for %d identities", len(keys))
    return ApiKeys(keys)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def _refusal(error: AuthFailed) -> JSONResponse:
    """Sent before the body is read, so the connection closes after it."""
    challenge = 'Bearer realm="scoring"' + (f', error="{error.error}"' if error.error else "")
    return error_response(error.status_code, error.message, close=True, headers={"WWW-Authenticate": challenge})


class Authentication:
    """ASGI middleware: every path but `open_paths` needs a valid bearer credential, checked before
    the body is read; the caller's `Identity` goes into `scope["state"]["identity"]`."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate | None, open_paths: frozenset[str],
                 batch_identities: frozenset[str]) -> None:
        self.app, self.authenticate, self.open_paths = app, authenticate, open_paths
        self.batch_identities = batch_identities

    def identity(self, name: str) -> Identity:
        return Identity(name=name, may_batch="*" in self.batch_identities or name in self.batch_identities)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            name = await self._caller(_header(scope, b"authorization"))
        except AuthFailed as error:
            await _refusal(error)(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = self.identity(name)
        await self.app(scope, receive, send)

    async def _caller(self, authorization: str) -> str:
        if self.authenticate is None:
            return ANONYMOUS
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise AuthFailed("credentials missing: send Authorization: Bearer <API key or token>", error=None)
        return await self.authenticate(credential.strip())


async def caller(request: Request) -> Identity:
    """FastAPI dependency: the identity `Authentication` decided for this request. (async although it
    does not wait: FastAPI runs a plain function dependency in a thread pool, a thread hop per request.)"""
    return request.state.identity
