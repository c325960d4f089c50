"""Scoring over HTTPS on loopback, the certificate checked by the client every time: the service's
own TLS (`TLS_CERT_FILE`/`TLS_KEY_FILE`, a certificate this test issues from its own CA), and Caddy
(the ACI group's deploy/aci/Caddyfile, its own local CA) terminating TLS in front of the service.
Both send HSTS over HTTPS and only there; Caddy's plain-HTTP port (port 80 in the group) only redirects."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.processes import TEST_API_KEY, TEST_HEADERS, ServiceProcess, running_caddy, running_service
from model.outputs import labels_from_scores
from client.scoring import ScoringClient
from model.loading import linear_model_from_estimator
from tests.real_parts import missing_part


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (CA file, certificate, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_service(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("tls")
    ca, certificate, key = issue_certificates(folder)
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "WORKER_COUNT": "1",
           "TLS_CERT_FILE": str(certificate), "TLS_KEY_FILE": str(key)}
    with running_service(env, folder / "service.log", ca_file=ca) as service:
        yield service


def assert_scores_correctly(url: str, verify: ssl.SSLContext | bool, images: np.ndarray, estimator: object) -> None:
    """The native client, over `url`, checking the server certificate with `verify`."""
    with ScoringClient(url, verify=verify, api_key=TEST_API_KEY) as client:
        labels, _ = client.predict(images)
    model = linear_model_from_estimator(estimator)
    assert (labels == labels_from_scores(model.scores(images.reshape(len(images), -1) / 255.0), model.classes)).all()


def test_the_service_serves_https_with_its_own_certificate(tls_service, mnist_test_images, bundled_estimator) -> None:
    assert tls_service.url.startswith("https://")
    assert_scores_correctly(tls_service.url, tls_service.verify, mnist_test_images[0][:2], bundled_estimator)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_service.url}/ready")  # not trusted without the test's CA


HSTS = "max-age=31536000"


def test_the_service_sends_hsts_on_every_answer_over_its_own_tls(tls_service) -> None:
    """Answered, refused and unknown alike: a browser that saw it once never sends a key over http:// again."""
    with httpx.Client(base_url=tls_service.url, verify=tls_service.verify) as client:
        answers = [client.get("/ready"), client.get("/v1/models"), client.get("/nothing", headers=TEST_HEADERS)]
    assert [answer.status_code for answer in answers] == [200, 401, 404]
    assert all(answer.headers.get_list("strict-transport-security") == [HSTS] for answer in answers)


def test_plain_http_answers_carry_no_hsts(service) -> None:
    for answer in (httpx.get(f"{service.url}/ready"), httpx.get(f"{service.url}/v1/models")):
        assert "strict-transport-security" not in answer.headers


def caddy_or_skip() -> None:
    if shutil.which("caddy") is None:
        missing_part("caddy is not installed (.ci/run installs it)")


def test_caddy_terminates_tls_in_front_of_the_service(service, mnist_test_images, bundled_estimator,
                                                     tmp_path: Path) -> None:
    caddy_or_skip()
    upstream = service.url.removeprefix("http://")
    with running_caddy(upstream, tmp_path) as caddy:
        verify = ssl.create_default_context(cafile=str(caddy.root_ca))
        assert_scores_correctly(caddy.url, verify, mnist_test_images[0][:2], bundled_estimator)
        refused = httpx.get(f"{caddy.url}/v1/models", verify=verify)
        assert refused.status_code == 401 and refused.headers.get_list("strict-transport-security") == [HSTS]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{caddy.url}/ready")


class RecordingUpstream(ThreadingHTTPServer):
    """An upstream on a free loopback port that answers 200 to anything and keeps every request line."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                upstream.requests.append(self.requestline)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def raw_http(url: str, request: bytes) -> bytes:
    """Send `request` as is to `url`'s port and read the answer until the server closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_caddys_plain_http_port_redirects_and_never_proxies(tmp_path: Path) -> None:
    """A client that sends its API key to http:// has leaked it already; Caddy must at least not pass the
    request on (a 308 for every host and path, no HSTS there: browsers ignore it over plain HTTP)."""
    caddy_or_skip()
    upstream = RecordingUpstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    body = b'{"data": "ciphertext", "key_id": "k"}'
    try:
        with running_caddy(f"127.0.0.1:{upstream.server_port}", tmp_path) as caddy:
            for host in (b"127.0.0.1", b"elsewhere.example"):
                for target in (b"/score", b"/v1/models", b"/.well-known/acme-challenge/x"):
                    answer = raw_http(caddy.http_url, b"POST " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
                                      b"Authorization: Bearer " + TEST_API_KEY.encode() + b"\r\n"
                                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                                      + body)
                    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower().splitlines()
                    assert head[0] == "http/1.1 308 permanent redirect", answer
                    assert f"location: https://{host.decode()}{target.decode()}" in head, answer
                    assert not any(line.startswith("strict-transport-security") for line in head)
            assert upstream.requests == []
            # The same Caddy does proxy over HTTPS: the port-80 requests were not lost on the way, but refused.
            verify = ssl.create_default_context(cafile=str(caddy.root_ca))
            proxied = httpx.post(f"{caddy.url}/score", content=body, headers=TEST_HEADERS, verify=verify)
            assert proxied.status_code == 200 and proxied.headers.get_list("strict-transport-security") == [HSTS]
            assert upstream.requests == ["POST /score HTTP/1.1"]
    finally:
        upstream.shutdown()
        upstream.server_close()
