"""Scoring over HTTPS on loopback, the certificate checked by the client every time: the service's
own TLS (`TLS_CERT_FILE`/`TLS_KEY_FILE`, a certificate this test issues from its own CA), and Caddy
(`tls internal`, its own local CA) terminating TLS in front of the service, as the ACI sidecar does."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.processes import TEST_API_KEY, ServiceProcess, running_caddy, running_service
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


def test_caddy_terminates_tls_in_front_of_the_service(service, mnist_test_images, bundled_estimator,
                                                     tmp_path: Path) -> None:
    if shutil.which("caddy") is None:
        missing_part("caddy is not installed (.ci/run installs it)")
    upstream = service.url.removeprefix("http://")
    with running_caddy(upstream, tmp_path) as (url, root_ca):
        verify = ssl.create_default_context(cafile=str(root_ca))
        assert_scores_correctly(url, verify, mnist_test_images[0][:2], bundled_estimator)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/ready")
