"""Microsoft Entra ID tokens over real HTTP: the tests play the tenant, serving a JWKS on loopback
and signing tokens with their own RSA keys; the service validates signature, issuer, audience,
expiry and app role, and fetches the signing keys again for an unknown `kid` at a bounded rate."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.processes import ServiceProcess, running_service
from service.http.auth import AuthConfigError, AuthFailed, EntraTokens, JwksCache, authenticator
from service.settings import Settings
from tests.http.unsent_body import send_without_body, status_of

AUDIENCE = "api://encrypted-scoring"
ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-00000000cafe/v2.0"
ROLE = "Scoring.Invoke"


class Tenant:
    """A JWKS endpoint on loopback and the private keys behind it; counts how often it is read."""

    def __init__(self) -> None:
        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.fetches = 0
        tenant = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                tenant.fetches += 1
                body = json.dumps(tenant.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/discovery/v2.0/keys"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict:
        entries = []
        for kid, key in self.keys.items():
            entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            entries.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": entries}

    def token(self, kid: str = "k1", key: rsa.RSAPrivateKey | None = None, **claims: object) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
                   "oid": str(uuid.uuid4()), "roles": [ROLE], **claims}
        return jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def tenant() -> Iterator[Tenant]:
    tenant = Tenant()
    yield tenant
    tenant.server.shutdown()


@pytest.fixture(scope="module")
def entra_service(tenant: Tenant, azurite: str, tmp_path_factory) -> Iterator[ServiceProcess]:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "AUTH_MODE": "entra",
           "ENTRA_ISSUER": ISSUER, "ENTRA_AUDIENCE": AUDIENCE, "ENTRA_JWKS_URL": tenant.url,
           "ENTRA_REQUIRED_ROLE": ROLE}
    with running_service(env, tmp_path_factory.mktemp("entra") / "service.log") as service:
        yield service


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_valid_token_is_served(entra_service: ServiceProcess, tenant: Tenant) -> None:
    response = httpx.get(f"{entra_service.url}/v1/model", headers=bearer(tenant.token()))
    assert response.status_code == 200, response.text


def refused_tokens(tenant: Tenant) -> dict[str, tuple[str, int, str]]:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "wrong audience": (tenant.token(aud="api://another-service"), 401, "audience"),
        "wrong issuer": (tenant.token(iss="https://login.microsoftonline.com/evil/v2.0"), 401, "issuer"),
        "expired": (tenant.token(exp=int(time.time()) - 3600), 401, "expired"),
        "bad signature": (tenant.token(key=forger), 401, "not valid"),
        "unknown kid": (tenant.token(kid="k-unknown", key=forger), 401, "unknown key"),
        "missing role": (tenant.token(roles=["Something.Else"]), 403, ROLE),
        "not a jwt": ("not.a.jwt", 401, "not a JWT"),
    }


@pytest.mark.parametrize("case", ["wrong audience", "wrong issuer", "expired", "bad signature", "unknown kid",
                                  "missing role", "not a jwt"])
@pytest.mark.parametrize("method, path", [("GET", "/v1/model"), ("POST", "/score"), ("POST", "/v1/keys"),
                                          ("GET", "/metrics")])
def test_bad_tokens_are_refused(entra_service: ServiceProcess, tenant: Tenant, case: str, method: str,
                                path: str) -> None:
    token, status, fragment = refused_tokens(tenant)[case]
    response = httpx.request(method, f"{entra_service.url}{path}", headers=bearer(token), timeout=30)
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_an_expired_token_is_refused_before_the_body_is_read(entra_service: ServiceProcess, tenant: Tenant,
                                                             path: str) -> None:
    expired = tenant.token(exp=int(time.time()) - 3600)
    assert status_of(send_without_body(entra_service.url, "POST", path, bearer(expired))) == 401


def test_tokens_never_reach_the_log(entra_service: ServiceProcess, tenant: Tenant) -> None:
    token = tenant.token()
    httpx.get(f"{entra_service.url}/v1/model", headers=bearer(token))
    assert token.split(".")[2] not in entra_service.log()


def test_unknown_kids_refetch_the_signing_keys_at_most_once_per_interval(tenant: Tenant) -> None:
    async def run() -> None:
        cache = JwksCache(tenant.url, min_refresh_s=3600)
        await cache.key("k1")
        fetched = tenant.fetches
        for attempt in range(5):
            with pytest.raises(AuthFailed, match="unknown key"):
                await cache.key(f"forged-{attempt}")
        assert tenant.fetches == fetched  # forged kids do not make the service hammer the tenant

        rotating = JwksCache(tenant.url, min_refresh_s=0)
        await rotating.key("k1")
        tenant.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        try:
            assert (await rotating.key("k2")).key_id == "k2"  # a rotated-in key is picked up on first sight
        finally:
            del tenant.keys["k2"]

    asyncio.run(run())


def test_the_identity_is_the_tokens_oid_else_its_appid(tenant: Tenant) -> None:
    tokens = EntraTokens(Settings(auth_mode="entra", entra_issuer=ISSUER, entra_audience=AUDIENCE,
                                  entra_jwks_url=tenant.url))

    async def identities() -> list[str]:
        return [await tokens(tenant.token(oid="object-1", appid="app-1")),
                await tokens(tenant.token(oid=None, appid="app-2"))]

    assert asyncio.run(identities()) == ["object-1", "app-2"]
    with pytest.raises(AuthFailed, match="names no object id"):
        asyncio.run(tokens(tenant.token(oid=None)))


def test_entra_mode_without_audience_or_tenant_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="ENTRA_AUDIENCE and ENTRA_TENANT_ID"):
        authenticator(Settings(auth_mode="entra", entra_tenant_id="t"))
