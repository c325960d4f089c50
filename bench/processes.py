"""Real local processes for tests and benchmarks: Azurite, Redis and the service, each on a free loopback port.

Services started here authenticate with one API key (`TEST_API_KEY`, identity `TEST_IDENTITY`,
allowed batches): send `ServiceProcess.headers`, or use `ServiceProcess.http`, an `httpx.Client`
that sends them. `authenticated_settings()` is the same for an in-process `create_app`.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

# SCORING_TIMEOUT_MS for test services that run the tutorial's EIServer (10-35 s a scoring, more on a loaded
# machine): far above the product's 60 s default, so no test depends on how fast the machine is.
GENEROUS_SCORING_TIMEOUT_MS = 900_000


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
    With `TLS_CERT_FILE` in `env` it serves HTTPS; `ca_file` is then the CA its certificate is
    checked against (`verify`, for httpx).
    """

    def __init__(self, env: dict[str, str], log_path: Path, ca_file: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"{'https' if 'TLS_CERT_FILE' in env else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self.log_path = log_path
        self.headers = dict(TEST_HEADERS)
        full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **TEST_AUTH_ENV, **env}
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, env=full_env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=60, verify=self.verify)

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2, verify=self.verify).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready within {timeout_s} s:\n{self.log()}")

    def metric(self, name: str, default: float | None = None, **labels: str) -> float:
        """The current value of the Prometheus sample `name{labels}`, read from `/metrics`; `default`
        when there is none (a labelled counter appears only once counted), else KeyError."""
        selector = "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}" if labels else ""
        for line in self.http.get("/metrics", timeout=10).text.splitlines():
            if line.startswith(f"{name}{selector} "):
                return float(line.split()[1])
        if default is not None:
            return default
        raise KeyError(f"no sample {name}{selector} in /metrics")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tree(self) -> dict[int, bytes]:
        """The service's own processes: pid -> command line, for the web process and its children
        (scoring workers and multiprocessing's resource tracker)."""
        processes = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except (OSError, IndexError, ValueError):
                continue
            if int(entry.name) == self.process.pid or parent == self.process.pid:
                processes[int(entry.name)] = command
        return processes

    def worker_pids(self) -> list[int]:
        """Pids of the scoring worker processes (spawned children, not the resource tracker)."""
        return [pid for pid, command in self.tree().items() if pid != self.process.pid and b"spawn_main" in command]

    def memory_mib(self, field: str = "VmRSS") -> float:
        """Resident memory of the process tree in MiB: now (`VmRSS`), or the sum of each process's
        peak since `reset_peak_memory` (`VmHWM`, a bound on the tree's peak that no sampling misses)."""
        total_kib = 0
        for pid in self.tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith(field)), 0)
        return total_kib / 1024

    def reset_peak_memory(self) -> None:
        """Restart every process's `VmHWM` from its current resident size (Linux `clear_refs`)."""
        for pid in self.tree():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                continue

    def stop(self) -> None:
        self.http.close()
        stop_process(self.process, grace_s=60)
        self._log.close()


@contextmanager
def running_service(env: dict[str, str], log_path: Path, ca_file: Path | None = None) -> Iterator[ServiceProcess]:
    service = ServiceProcess(env, log_path, ca_file)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


CADDYFILE = PROJECT_ROOT / "deploy" / "aci" / "Caddyfile"
# In place of the deployed file's global options: free loopback ports (the HTTP one stands for port 80),
# state in the test's folder, Caddy's local CA (its site is 127.0.0.1) installed in no trust store, no admin API.
CADDY_TEST_OPTIONS = """{{
    admin off
    skip_install_trust
    default_bind 127.0.0.1
    http_port {http_port}
    https_port {https_port}
    storage file_system {data}
}}
"""


@dataclass(frozen=True)
class CaddyProcess:
    url: str  # https://127.0.0.1:<port>, the proxy
    http_url: str  # http://127.0.0.1:<port>, what port 80 is in the ACI group
    root_ca: Path  # the certificate of the CA that signed the proxy's


@contextmanager
def running_caddy(upstream: str, workdir: Path) -> Iterator[CaddyProcess]:
    """The ACI group's Caddy (deploy/aci/Caddyfile's site) in front of `upstream` (host:port), for the
    site 127.0.0.1, on free loopback ports, with a certificate from Caddy's own local CA."""
    caddy = shutil.which("caddy")
    if caddy is None:
        raise RuntimeError("caddy is not installed (apt-get install caddy; .ci/run does)")
    http_port, https_port = free_port(), free_port()
    data = workdir / "caddy-data"
    _, site_address, site = CADDYFILE.read_text().partition("\n{$SITE_ADDRESS} {")
    if not site_address:
        raise RuntimeError(f"{CADDYFILE} has no {{$SITE_ADDRESS}} site")
    config = workdir / "Caddyfile"
    config.write_text(CADDY_TEST_OPTIONS.format(http_port=http_port, https_port=https_port, data=data)
                      + site_address + site)
    env = {**os.environ, "HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "xdg-data"),
           "XDG_CONFIG_HOME": str(workdir / "xdg-config"), "SITE_ADDRESS": "127.0.0.1", "UPSTREAM": upstream}
    log = open(workdir / "caddy.log", "wb")
    process = subprocess.Popen([caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(https_port, process, 60)
        _wait_for_port(http_port, process, 60)
        root = data / "pki" / "authorities" / "local" / "root.crt"
        # Caddy listens before it has issued its own certificate; until then handshakes fail.
        wait_until(lambda: process.poll() is None and _verified_handshake(https_port, root), 60,
                   "Caddy serving a certificate from its local CA")
        yield CaddyProcess(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", root)
    finally:
        stop_process(process, grace_s=10)
        log.close()


def _verified_handshake(port: int, root: Path) -> bool:
    """Whether a TLS handshake with 127.0.0.1:`port` verifies against the CA certificate `root`."""
    try:
        context = ssl.create_default_context(cafile=str(root))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1"):
            return True
    except (OSError, ssl.SSLError):  # no CA file yet, or no certificate served yet
        return False
