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
JWKS_TIMEOUT_S = 10.0
JWKS_MAX_AGE_S = 24 * 3600  # signing keys removed by the tenant stop being trusted within a day
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
    """The tenant's signing keys by `kid`: fetched once, again for an unknown `kid` at most every
    `min_refresh_s` (so forged kids cannot make the service hammer the tenant), and daily."""

    def __init__(self, url: str, min_refresh_s: float) -> None:
        self._url, self._min_refresh_s = url, min_refresh_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    def _stale(self, kid: str) -> bool:
        if self._fetched_at is None:
            return True
        age = time.monotonic() - self._fetched_at
        return age >= JWKS_MAX_AGE_S or (kid not in self._keys and age >= self._min_refresh_s)

    async def key(self, kid: str) -> jwt.PyJWK:
        if self._stale(kid):
            async with self._lock:
                if self._stale(kid):
                    self._keys = await run_in_threadpool(self._fetch)
                    self._fetched_at = time.monotonic()
        try:
            return self._keys[kid]
        except KeyError:
            raise AuthFailed("the token is signed by an unknown key") from None

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            with urllib.request.urlopen(self._url, timeout=JWKS_TIMEOUT_S) as response:  # noqa: S310 - operator's URL
                keys = jwt.PyJWKSet.from_dict(json.loads(response.read())).keys
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            log.error("cannot fetch the token signing keys from %s: %s", self._url, exc)
            raise AuthFailed("token signing keys are unavailable; try again later", 503, error=None) from None
        log.info("fetched %d token signing keys from %s", len(keys), self._url)
        return {key.key_id: key for key in keys if key.key_id}


class EntraTokens:
    """Microsoft Entra ID access tokens (RS256 JWTs) for one tenant and audience."""

    def __init__(self, settings: Settings) -> None:
        tenant = settings.entra_tenant_id
        issuer = settings.entra_issuer or (tenant and f"https://login.microsoftonline.com/{tenant}/v2.0")
        jwks_url = settings.entra_jwks_url or (tenant and
                                               f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys")
        if not (issuer and jwks_url and settings.entra_audience):
            raise AuthConfigError("AUTH_MODE=entra needs ENTRA_AUDIENCE and ENTRA_TENANT_ID "
                                  "(or ENTRA_ISSUER and ENTRA_JWKS_URL)")
        self._issuer, self._audience, self._role = issuer, settings.entra_audience, settings.entra_required_role
        self._keys = JwksCache(jwks_url, settings.entra_jwks_min_refresh_s)

    async def __call__(self, credential: str) -> str:
        try:
            header = jwt.get_unverified_header(credential)
        except jwt.InvalidTokenError:
            raise AuthFailed("the bearer token is not a JWT") from None
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
        if self._role and self._role not in (claims.get("roles") or []):
            raise AuthFailed(f"the token lacks the app role '{self._role}'", 403, error="insufficient_scope")
        identity = claims.get("oid") or claims.get("appid")
        if not isinstance(identity, str) or not identity:
            raise AuthFailed("the token names no object id (oid) or application id (appid)")
        return identity


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
