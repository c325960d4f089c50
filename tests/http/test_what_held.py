"""What an attacker's review of the service found to hold, kept holding, over real HTTP on loopback.

The service runs as the review ran it: one worker, keys for alice and bob (and carol and dave, so
that the quota tests spend quotas of their own), batches for alice only, 50 images an hour, 3 keys
per identity. Requests are written on raw sockets wherever a client library would normalize them
(`..` and `.` segments, `//`, percent-escapes, absolute-form and `*` request targets, control
bytes). Each check names what it holds; what is already held elsewhere is not repeated here (see
/work/briefs/what_held.md for the map from each finding to its tests).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from bench.processes import ServiceProcess, running_redis, running_service
from client.scoring import ScoringClient
from service.http import auth
from tests.expectations import served_v1_plan, v1_exact_scores
# Fixtures used by name (pytest finds them in this module's namespace): the tenant and the service that
# trusts it, and the HTTPS service with an EC certificate.
from tests.http.test_entra_tokens import AUDIENCE, ISSUER, ROLE, Tenant, bearer, entra_service, tenant  # noqa: F401
from tests.http.test_tls import tls_service  # noqa: F401
from tests.http.unsent_body import send_without_body, status_of
from tests.real_parts import missing_part

KEYS = {"alice": "alice-held-key-5e0c91", "bob": "bob-held-key-7a44d2", "carol": "carol-held-key-0b3f8e",
        "dave": "dave-held-key-c2d617"}
QUOTA = 50
HELD_ENV = {"WORKER_COUNT": "1", "API_KEYS": ",".join(f"{name}={key}" for name, key in KEYS.items()),
            "BATCH_IDENTITIES": "alice", "RATE_LIMIT": f"{QUOTA}/hour", "MAX_KEYS_PER_IDENTITY": "3",
            "KEY_CONTAINER": "held-keys"}  # a container of its own: no other module's keys count here
MODEL, VERSION = "mnist", "1"  # the bundled model, the service's only (and default) one
PREFIXES = ("/v1", f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/{VERSION}")
ZERO = np.zeros(784, dtype=np.int64)
ANSWER_TIMEOUT_S = 300  # bound on one answer on a loaded machine; never a measure of speed


def auth_headers(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}", "Content-Type": "application/octet-stream"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    head: bytes  # the status line and header fields as received
    body: bytes
    body_sent: bool  # False: answered before the service asked for the body (decided from the headers)


def exchange(url: str, method: str, target: str, headers: dict[str, str], body: bytes = b"",
             raw_headers: bytes = b"") -> Reply:
    """One request on its own connection, its request target sent byte for byte as given. A body is
    announced with `Expect: 100-continue` and sent only if the service asks for it, so a request the
    service refuses from its headers never makes it receive (or reset the connection over) the body."""
    address = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {address.netloc}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    if body:
        lines += [f"Content-Length: {len(body)}", "Expect: 100-continue"]
    with socket.create_connection((address.hostname, address.port), timeout=ANSWER_TIMEOUT_S) as sock, \
            sock.makefile("rb") as reader:
        sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n" + raw_headers + b"\r\n")
        reply = _read_reply(reader, method)
        sent = reply.status == 100
        if sent:
            sock.sendall(body)
            reply = _read_reply(reader, method)
        reply.body_sent = sent
        return reply


def _read_reply(reader, method: str) -> Reply:
    status_line = reader.readline()
    assert status_line, "the connection closed without an answer"
    head, headers = status_line, {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        head += line
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    informational = int(status_line.split()[1]) < 200
    length = 0 if informational or method == "HEAD" else int(headers.get("content-length", 0))
    return Reply(int(status_line.split()[1]), headers, head, reader.read(length), body_sent=False)


@pytest.fixture(scope="module")
def held(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service with the review's settings, quota counters in memory."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, **HELD_ENV}
    with running_service(env, tmp_path_factory.mktemp("held") / "service.log") as service:
        models = httpx.get(f"{service.url}/v1/models", headers=auth_headers("alice")).json()["models"]
        assert [(model["name"], model["version"]) for model in models] == [(MODEL, VERSION), ("mnist-square", "1")]
        yield service


@pytest.fixture(scope="module")
def alice(held: ServiceProcess) -> Iterator[ScoringClient]:
    """alice's v1 client, its key stored (one of her 3): her batches, and the key bob tries to take."""
    with ScoringClient(held.url, api_key=KEYS["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def zero_scores(bundled_estimator) -> np.ndarray:
    """The exact scores of the all-zero image, as a v1 client reads them."""
    return v1_exact_scores(served_v1_plan(bundled_estimator), np.zeros((1, 784), np.uint8))[0]


# 1. Without credentials, no spelling of a protected route (or of any route) gets past 401.

TRICKS = [
    ("POST", "//score"), ("POST", "/SCORE"), ("POST", "/sc%6fre"), ("POST", "/%2fscore"), ("POST", "/score/"),
    ("POST", "/score;x"), ("POST", "/score%00"), ("POST", "/./score"), ("POST", "http://{authority}/score"),
    ("OPTIONS", "*"), ("OPTIONS", "/score"), ("HEAD", "/metrics"), ("PUT", "/score"), ("TRACE", "/score"),
    ("GET", "/demo/../metrics"), ("GET", "/demo/%2e%2e/metrics"), ("GET", "/demo%2f..%2fmetrics"),
    ("GET", "/demo/index.html/../../metrics"), ("GET", "/demo\\..\\metrics"), ("GET", "/ready/../metrics"),
    ("GET", "/ready%2f..%2fmetrics"), ("GET", "//ready/../metrics"), ("GET", "http://{authority}/ready/../metrics"),
    ("GET", "https://{authority}/metrics"), ("GET", "/%6detrics"), ("GET", "/metrics/"), ("GET", "/metrics?x=1"),
    ("GET", "/metrics#x"), ("GET", "/%2e/metrics"), ("GET", "/Ready"), ("GET", "/v1/model%20"),
    ("POST", "/v1/score/../keys"), ("GET", "/v1//keys"), ("GET", f"/v1/models/{MODEL}%2f..%2f..%2fkeys"),
    ("GET", "/demo/..%2f..%2fservice%2fsettings.py"), ("DELETE", "/v1/keys/" + "ab" * 32),
]


def _target(service: ServiceProcess, target: str) -> str:
    return target.format(authority=urlsplit(service.url).netloc)


@pytest.mark.parametrize("method, target", TRICKS)
def test_a_path_trick_without_credentials_is_answered_401(held: ServiceProcess, method: str, target: str) -> None:
    reply = exchange(held.url, method, _target(held, target), {})
    assert reply.status == 401, reply.head + reply.body
    assert reply.headers["www-authenticate"].startswith("Bearer")
    if method != "HEAD":
        assert json.loads(reply.body)["message"].startswith("credentials missing")


@pytest.mark.parametrize("method, target", TRICKS)
def test_a_path_trick_with_a_valid_key_is_never_a_server_error(held: ServiceProcess, method: str,
                                                               target: str) -> None:
    reply = exchange(held.url, method, _target(held, target), {"Authorization": f"Bearer {KEYS['bob']}"})
    assert reply.status < 500, reply.head + reply.body


@pytest.mark.parametrize("target", ["\\metrics", "metrics"])
def test_a_request_target_the_parser_refuses_never_reaches_the_app(held: ServiceProcess, target: str) -> None:
    reply = exchange(held.url, "GET", target, {})
    assert reply.status == 400 and b"scoring_" not in reply.body, reply.head + reply.body


# 2. Batches are alice's on every spelling of every batch route; bob is refused from his headers.

SERVED_BATCH_SPELLINGS = [
    *(f"{prefix}/score/batch" for prefix in PREFIXES), "/v1/score%2fbatch", "/v1/%73core/batch",
    "/v1/score/batch?x=1", "/v1/score/batch#x", "http://{authority}/v1/score/batch", "/v1/models/mn%69st/score/batch",
    f"/v1/models/{MODEL}%2fscore/batch", f"/v1/models/{MODEL}/versions/%31/score/batch",
    f"/v1/models/{MODEL}/versions/{VERSION}%2fscore/batch", f"/v1/models/{MODEL}/versions/{VERSION}/score%2Fbatch",
]
UNROUTED_BATCH_SPELLINGS = [
    "/v1/score/batch/", "/v1//score/batch", "/v1/./score/batch", "/v1/score/./batch", "/v1/score//batch",
    "/v1/score/batch;x", "/v1/score/batch%00", "/v1/score/batch%20", "/V1/score/batch", "/v1/score/BATCH",
    "//v1/score/batch", f"/v1/models/{MODEL}/score/../score/batch", f"/v1/models/x/../{MODEL}/score/batch",
    f"/v1/models/{MODEL}/versions/{VERSION}/../score/batch", f"/v1/models/{MODEL}/versions/../score/batch",
    f"/v1/models/{MODEL}/versions/{VERSION}/score/batch/",
]


@pytest.fixture(scope="module")
def batch_of_one(alice: ScoringClient) -> bytes:
    """A valid batch request (one all-zero image) under alice's key: 1 image of a quota."""
    return alice._keys.encrypt_batch(ZERO[None])


@pytest.mark.parametrize("target", SERVED_BATCH_SPELLINGS)
def test_a_batch_route_however_spelled_serves_alice_and_refuses_bob_from_his_headers(
        held: ServiceProcess, alice: ScoringClient, batch_of_one: bytes, zero_scores: np.ndarray, target: str) -> None:
    refused = exchange(held.url, "POST", _target(held, target), auth_headers("bob"), batch_of_one)
    assert refused.status == 403 and "BATCH_IDENTITIES" in json.loads(refused.body)["message"], refused.body
    assert not refused.body_sent
    served = exchange(held.url, "POST", _target(held, target), auth_headers("alice"), batch_of_one)
    assert served.status == 200, served.body[:300]
    np.testing.assert_array_equal(alice._keys.decrypt_batch(served.body)[0] / alice.plan.score_scale, zero_scores)


@pytest.mark.parametrize("target", UNROUTED_BATCH_SPELLINGS)
def test_a_spelling_that_reaches_no_batch_route_serves_nobody_and_bob_learns_nothing_more(
        held: ServiceProcess, batch_of_one: bytes, target: str) -> None:
    """alice, who may batch, is not served on these spellings either (so they are no way round the
    permission), and bob's answer is hers or a 403: it tells him nothing alice's would not."""
    hers = exchange(held.url, "POST", target, auth_headers("alice"), batch_of_one)
    his = exchange(held.url, "POST", target, auth_headers("bob"), batch_of_one)
    assert hers.status != 200 and hers.status < 500, hers.body[:300]
    assert his.status in (403, hers.status), his.body[:300]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS", "HEAD"])
def test_bob_is_refused_a_batch_route_whatever_the_method(held: ServiceProcess, method: str) -> None:
    for prefix in PREFIXES:
        reply = exchange(held.url, method, f"{prefix}/score/batch", auth_headers("bob"))
        assert reply.status == 403, (prefix, reply.head + reply.body)


# 3. A key belongs to the identity that stored it: to bob, alice's key id is one nobody stored.

def _with_key_id(request: bytes, key_id: bytes) -> bytes:
    return request[:16] + key_id + request[48:]  # the key id's place in a v1 request (bfv.wire)


def _without(text: bytes, key_id: str) -> str:
    return text.decode().replace(key_id, "<key id>")


def test_bob_cannot_tell_alices_key_from_a_key_nobody_stored(held: ServiceProcess, alice: ScoringClient) -> None:
    hers = alice._keys.encrypt_single(ZERO)
    alices_id = hers[16:48].hex()
    assert alices_id == alice.key_id
    nobodys = _with_key_id(hers, hashlib.sha256(b"never stored").digest())
    nobodys_id = nobodys[16:48].hex()
    for prefix in PREFIXES:
        for method, path, body in [("POST", f"{prefix}/score", hers), ("DELETE", f"{prefix}/keys/{alices_id}", b"")]:
            stolen = exchange(held.url, method, path, auth_headers("bob"), body)
            unknown_body = nobodys if body else b""
            unknown = exchange(held.url, method, path.replace(alices_id, nobodys_id), auth_headers("bob"),
                               unknown_body)
            assert stolen.status == unknown.status == 404, (path, stolen.body)
            assert _without(stolen.body, alices_id) == _without(unknown.body, nobodys_id), path
    listed = httpx.get(f"{held.url}/v1/keys", headers=auth_headers("bob")).json()["keys"]
    assert alices_id not in {key["key_id"] for key in listed}
    for prefix in PREFIXES:  # bob's attempts changed nothing: alice's key still serves her everywhere
        assert httpx.post(f"{held.url}{prefix}/score", content=hers, headers=auth_headers("alice"),
                          timeout=ANSWER_TIMEOUT_S).status_code == 200


# 5. Control bytes in the request-id headers: refused by the HTTP parser, never echoed nor logged.

CONTROL_BYTES = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]  # every C0 control but HTAB, and DEL


@pytest.mark.parametrize("name", ["x-request-id", "x-ms-client-request-id"])
def test_a_request_id_with_a_control_byte_is_refused_400_and_never_echoed(held: ServiceProcess, name: str) -> None:
    """uvicorn's httptools parser (llhttp) refuses such a header value with 400 before the app runs,
    so the value is neither echoed (RequestTracking echoes ids as they come) nor logged. CR and LF
    alone included: no answer header can be injected through an id."""
    for byte in CONTROL_BYTES:
        marker = f"ctl-{byte:02x}-{uuid.uuid4().hex[:8]}"
        value = marker.encode() + bytes([byte]) + b"x-injected: 1"
        reply = exchange(held.url, "GET", "/", {}, raw_headers=name.encode() + b": " + value + b"\r\n")
        assert reply.status == 400, (byte, reply.head)
        assert marker.encode() not in reply.head + reply.body and b"x-injected" not in reply.head, (byte, reply.head)
        assert not set(reply.head) & (set(CONTROL_BYTES) - {0x0D, 0x0A}), (byte, reply.head)  # CRLF ends lines
        assert marker not in held.log(), byte


@pytest.mark.parametrize("name", ["x-request-id", "x-ms-client-request-id"])
def test_a_request_id_with_a_tab_is_field_content_and_echoed_as_sent(held: ServiceProcess, name: str) -> None:
    """HTAB is the one control byte HTTP allows inside a field value (RFC 9110 5.5): echoing it
    splits no header, so it is accepted, echoed as it came and logged."""
    reply = exchange(held.url, "GET", "/", {name: "tab\there"})
    assert reply.status == 200 and reply.headers[name] == "tab\there"


# 7. 60 requests at once against 50 images an hour: the quota admits exactly 50.

async def _burst(url: str, identity: str, request: bytes, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=count), timeout=ANSWER_TIMEOUT_S) as client:
        return await asyncio.gather(*(client.post(f"{url}/v1/score", content=request, headers=auth_headers(identity))
                                      for _ in range(count)))


def test_sixty_concurrent_requests_against_a_quota_of_fifty_are_admitted_exactly_fifty_times(
        held: ServiceProcess, zero_scores: np.ndarray) -> None:
    """However they interleave, the quota admits no more than 50: the counter's hit is atomic (a check
    then a hit would let more through). At the review's settings not all 60 reach the quota: one
    worker and MAX_QUEUE=64, of which one identity may hold half, refuse some as busy (503) before
    they are charged; the others are served until 50 are, then refused 429."""
    with ScoringClient(held.url, api_key=KEYS["carol"]) as carol:
        answers = asyncio.run(_burst(held.url, "carol", carol._keys.encrypt_single(ZERO), QUOTA + 10))
        statuses = Counter(answer.status_code for answer in answers)
        assert set(statuses) <= {200, 429, 503} and statuses[200] <= QUOTA, statuses
        assert statuses[429] == max(0, QUOTA + 10 - statuses[503] - QUOTA), statuses
        assert all("busy" in answer.json()["message"] for answer in answers if answer.status_code == 503)
        for answer in answers:
            if answer.status_code == 200:
                np.testing.assert_array_equal(carol._keys.decrypt_single(answer.content) / carol.plan.score_scale,
                                              zero_scores)


def test_a_request_refused_as_busy_costs_no_image_of_the_quota(held: ServiceProcess) -> None:
    with ScoringClient(held.url, api_key=KEYS["dave"]) as dave:
        request = dave._keys.encrypt_single(ZERO)
        statuses = Counter(answer.status_code for answer in asyncio.run(_burst(held.url, "dave", request, QUOTA + 10)))
        if not statuses[503]:
            pytest.skip(f"no request was refused as busy this time ({statuses}): nothing to check")
        served = statuses[200]
        while served < QUOTA and httpx.post(f"{held.url}/v1/score", content=request, headers=auth_headers("dave"),
                                            timeout=ANSWER_TIMEOUT_S).status_code == 200:
            served += 1
        assert served == QUOTA, f"{served} images scored for a quota of {QUOTA}: {statuses}"


# 8. Quota counters in Redis that cannot be reached: scoring fails closed with 503.

@pytest.fixture(scope="module")
def redis_metered(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ExitStack]]:
    """The review's service with its counters in a real redis-server; closing the ExitStack stops that Redis."""
    if shutil.which("redis-server") is None:
        missing_part("redis-server is not installed (.ci/run installs it)")
    with ExitStack() as redis:
        uri = redis.enter_context(running_redis())
        env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, **HELD_ENV, "RATE_LIMIT_STORAGE_URI": uri}
        with running_service(env, tmp_path_factory.mktemp("redis-metered") / "service.log") as service:
            yield service, redis


def test_scoring_fails_closed_with_503_when_redis_is_down(redis_metered: tuple[ServiceProcess, ExitStack]) -> None:
    service, redis = redis_metered
    with ScoringClient(service.url, api_key=KEYS["carol"]) as carol:
        request = carol._keys.encrypt_single(ZERO)
        assert httpx.post(f"{service.url}/v1/score", content=request, headers=auth_headers("carol"),
                          timeout=ANSWER_TIMEOUT_S).status_code == 200  # counted in Redis while it runs
        redis.close()  # the redis-server process has exited when this returns
        refused = httpx.post(f"{service.url}/v1/score", content=request, headers=auth_headers("carol"),
                             timeout=ANSWER_TIMEOUT_S)
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    assert "quota counters cannot be reached" in refused.json()["message"]
    # Every metered route, refused from its headers: nothing is scored, no body is received, unmetered.
    for path, who in [("/v1/score", "carol"), ("/score", "carol"), ("/v1/score/batch", "alice"),
                      (f"/v1/models/{MODEL}/versions/{VERSION}/score", "carol")]:
        headers = {"Authorization": f"Bearer {KEYS[who]}"}
        assert status_of(send_without_body(service.url, "POST", path, headers)) == 503, path
    assert httpx.get(f"{service.url}/v1/model", headers=auth_headers("carol")).status_code == 200
    assert service.process.poll() is None


# 9. API keys: every configured key is compared, whatever is presented.

def test_every_configured_key_is_compared_in_full_whatever_the_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same comparisons, of fixed-length digests, for the first key, the last, a prefix of one,
    one longer by a byte, and a guess: no early exit and no length tells a guess how close it came."""
    keys = auth.ApiKeys({"alice": [KEYS["alice"], "alice-rotated-key-91d0"], "bob": [KEYS["bob"]]})
    compared: list[tuple[int, int]] = []
    real_compare = hmac.compare_digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting_compare)
    presented = {KEYS["alice"]: "alice", KEYS["bob"]: "bob", KEYS["alice"][:-1]: None, KEYS["bob"] + "x": None,
                 "guessed-key": None, "x" * 4096: None}
    for credential, identity in presented.items():
        compared.clear()
        if identity is None:
            with pytest.raises(auth.AuthFailed):
                asyncio.run(keys(credential))
        else:
            assert asyncio.run(keys(credential)) == identity
        assert compared == [(32, 32)] * 3, credential[:20]


# 4. Entra tokens the tenant's keys did not sign as the service requires: all 401.
# (Wrong issuer and wrong audience: test_entra_tokens.py::test_bad_tokens_are_refused.)

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: object) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600, "oid": str(uuid.uuid4()),
              "roles": [ROLE], **changes}
    return {name: value for name, value in claims.items() if value is not None}


def _signing_input(header: dict, claims: dict) -> str:
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"


def forged_tokens(tenant: Tenant) -> dict[str, str]:
    key = tenant.keys["k1"]
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    hs256_input = _signing_input({"alg": "HS256", "typ": "JWT", "kid": "k1"}, _claims())
    hs256_signature = hmac.new(public_pem, hs256_input.encode(), hashlib.sha256).digest()
    return {
        "alg none": _signing_input({"alg": "none", "typ": "JWT", "kid": "k1"}, _claims()) + ".",
        "HS256 keyed with the RSA public key": f"{hs256_input}.{_b64url(hs256_signature)}",
        "no exp": jwt.encode(_claims(exp=None), key, algorithm="RS256", headers={"kid": "k1"}),
        "nbf in an hour": jwt.encode(_claims(nbf=int(time.time()) + 3600, exp=int(time.time()) + 7200), key,
                                     algorithm="RS256", headers={"kid": "k1"}),
        "unknown crit extension": jwt.encode(_claims(), key, algorithm="RS256",
                                             headers={"kid": "k1", "crit": ["urn:example:must-understand"],
                                                      "urn:example:must-understand": True}),
    }


@pytest.mark.parametrize("case", ["alg none", "HS256 keyed with the RSA public key", "no exp", "nbf in an hour",
                                  "unknown crit extension"])
def test_a_forged_or_incomplete_entra_token_is_refused_401(entra_service: ServiceProcess, tenant: Tenant,
                                                           case: str) -> None:
    response = httpx.get(f"{entra_service.url}/v1/model", headers=bearer(forged_tokens(tenant)[case]), timeout=30)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="scoring", error="invalid_token"')


def test_the_claims_the_forgeries_start_from_are_served_when_properly_signed(entra_service: ServiceProcess,
                                                                             tenant: Tenant) -> None:
    token = jwt.encode(_claims(), tenant.keys["k1"], algorithm="RS256", headers={"kid": "k1"})
    assert httpx.get(f"{entra_service.url}/v1/model", headers=bearer(token), timeout=30).status_code == 200


# 6. TLS: no TLS 1.1 (nor 1.0), no SHA-1 signatures, no static-RSA key exchange, whatever the certificate.

@pytest.fixture(scope="module")
def rsa_tls_service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """HTTPS with a self-signed RSA certificate: static-RSA suites need an RSA key to be offered at all
    (the EC certificate of `tls_service` rules them out whatever the service allows)."""
    folder = tmp_path_factory.mktemp("rsa-tls")
    certificate, key = folder / "rsa.pem", folder / "rsa-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(certificate), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1"],
                   check=True, capture_output=True)
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1", "TLS_CERT_FILE": str(certificate),
           "TLS_KEY_FILE": str(key)}
    with running_service(env, folder / "service.log", ca_file=certificate) as service:
        yield service


CERTIFICATES = ["tls_service", "rsa_tls_service"]  # ECDSA P-256 (test_tls.py), RSA 2048


def _handshake(service: ServiceProcess, version: ssl.TLSVersion, ciphers: str = "DEFAULT") -> str:
    """The protocol version the service agrees to, or the reason the handshake failed. The client is
    made willing to go as low as asked (`@SECLEVEL=0`): what it then cannot get, the service refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # trust is test_tls.py's; here: what is agreed
    context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    address = urlsplit(service.url)
    try:
        with socket.create_connection((address.hostname, address.port), timeout=30) as raw, \
                context.wrap_socket(raw, server_hostname=address.hostname) as tls:
            return tls.version()
    except ssl.SSLError as error:
        return error.reason
    except ConnectionResetError:
        return "reset by the service"


# Reasons a handshake ends on the service's side, after the client sent its hello (a client-side refusal
# would be NO_PROTOCOLS_AVAILABLE or NO_CIPHERS_AVAILABLE, before anything was sent).
SERVICE_REFUSALS = {"UNEXPECTED_EOF_WHILE_READING", "TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_HANDSHAKE_FAILURE",
                    "reset by the service"}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("certificate", CERTIFICATES)
def test_tls_1_1_and_1_0_are_refused(request: pytest.FixtureRequest, certificate: str) -> None:
    service = request.getfixturevalue(certificate)
    assert _handshake(service, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"  # the same client, one version up
    for version in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        assert _handshake(service, version) in SERVICE_REFUSALS, version


@pytest.mark.parametrize("certificate", CERTIFICATES)
def test_static_rsa_key_exchange_is_refused(request: pytest.FixtureRequest, certificate: str) -> None:
    service = request.getfixturevalue(certificate)
    assert _handshake(service, ssl.TLSVersion.TLSv1_2, "ECDHE") == "TLSv1.2"
    assert _handshake(service, ssl.TLSVersion.TLSv1_2, "kRSA") in SERVICE_REFUSALS


@pytest.mark.parametrize("certificate", CERTIFICATES)
def test_sha1_signature_algorithms_are_refused(request: pytest.FixtureRequest, certificate: str) -> None:
    """Python's ssl cannot choose the signature algorithms a client offers; `openssl s_client` can."""
    if shutil.which("openssl") is None:
        missing_part("the openssl command is not installed")
    service = request.getfixturevalue(certificate)
    key_type = "RSA" if certificate == "rsa_tls_service" else "ECDSA"

    def handshake(sigalgs: str) -> str:
        return subprocess.run(["openssl", "s_client", "-connect", urlsplit(service.url).netloc, "-tls1_2",
                               "-sigalgs", sigalgs, "-cipher", "DEFAULT:@SECLEVEL=0"], input="",
                              capture_output=True, text=True, timeout=60).stdout

    assert "Peer signing digest: SHA256" in handshake(f"{key_type}+SHA256")
    refused = handshake(f"{key_type}+SHA1")
    assert "Cipher is (NONE)" in refused and "Peer signing digest" not in refused, refused
