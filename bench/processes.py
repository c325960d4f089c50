"""Real local processes for tests and benchmarks: Azurite, Redis and the service, each on a free loopback port.

Services started here authenticate with one API key (`TEST_API_KEY`, identity `TEST_IDENTITY`,
allowed batches): send `ServiceProcess.headers`, or use `ServiceProcess.http`, an `httpx.Client`
that sends them. `authenticated_settings()` is the same for an in-process `create_app`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from client import bearer
from service.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REDIS_SERVER = "redis-server"

# The credential of services started for tests and benchmarks (never of a deployment).
TEST_IDENTITY = "tests"
TEST_API_KEY = "tests-only-key-4f6b2a9c1e7d"
TEST_AUTH_ENV = {"AUTH_MODE": "key", "API_KEYS": f"{TEST_IDENTITY}={TEST_API_KEY}", "BATCH_IDENTITIES": "*"}


TEST_HEADERS = bearer(TEST_API_KEY)


def authenticated_settings(**overrides: object) -> Settings:
    """Settings for an in-process `create_app` that accepts `TEST_HEADERS`."""
    return Settings(**{"api_keys": TEST_AUTH_ENV["API_KEYS"], "batch_identities": "*", **overrides})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def azurite_connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout_s` (a generous bound, not an expected time)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout_s} s")
        time.sleep(0.1)


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout_s} s")


def stop_process(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `grace_s` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_azurite() -> Iterator[str]:
    """Azurite's blob service with in-memory storage; yields its connection string."""
    if not AZURITE_BLOB.exists():
        raise RuntimeError(f"{AZURITE_BLOB} is missing: run `npm ci` (make test does)")
    port = free_port()
    process = subprocess.Popen(
        [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
         "--skipApiVersionCheck", "--loose", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, 60)
        yield azurite_connection_string(port)
    finally:
        stop_process(process, grace_s=5)


@contextmanager
def running_redis() -> Iterator[str]:
    """A throw-away `redis-server` on a free loopback port, nothing persisted; yields its URI."""
    port = free_port()
    process = subprocess.Popen([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--protected-mode", "yes"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, 60)
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop_process(process, grace_s=5)


class ServiceProcess:
    """`python -m service` in a subprocess, with its output kept for assertions.

    It accepts `TEST_API_KEY` unless `env` sets other credentials; `headers` and `http` carry it.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.headers = dict(TEST_HEADERS)
        full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **TEST_AUTH_ENV, **env}
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, env=full_env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready within {timeout_s} s:\n{self.log()}")

    def metric(self, name: str) -> float:
        """The current value of the unlabelled Prometheus sample `name`, read from `/metrics`."""
        for line in self.http.get("/metrics", timeout=10).text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise KeyError(f"no sample {name} in /metrics")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.http.close()
        stop_process(self.process, grace_s=60)
        self._log.close()


@contextmanager
def running_service(env: dict[str, str], log_path: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(env, log_path)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()
