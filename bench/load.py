"""`python -m bench.load [--requests N] [--concurrency C]`: a bounded load test on loopback.

Starts Azurite and the service (fast engine, defaults) on free loopback ports, then sends N
requests with C in flight from an async httpx driver: one in five a real encrypted MNIST request
from the tutorial's client, the others malformed in every way the API refuses. Reports failures among
the valid requests, p50/p99 latencies, throughput, the answers to malformed requests, the
service's memory (web process plus workers) before and after, and that it is still alive. Sends
nothing anywhere but 127.0.0.1 and stops after N requests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.processes import TEST_API_KEY, TEST_HEADERS, running_azurite, running_service
from client.azureml import AzureMLSession
from model.outputs import labels_from_scores
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from model.mnist import load_evaluation_images
from service.azureml.seal_format import HEADER

VALID_EVERY = 5
OVERSIZED_EVERY = 500


def malformed_bodies(valid: dict) -> dict[str, bytes]:
    raw = base64.b64decode(valid["data"][0])
    inner = bytearray(zlib.decompress(raw[HEADER.size:]))
    inner[40] ^= 0xFF
    payload = zlib.compress(bytes(inner))
    corrupted = HEADER.pack(0xA15E, 16, 3, 5, 1, 0, HEADER.size + len(payload)) + payload
    variants = {
        "not JSON": b"{oops",
        "missing field": {"key_id": valid["key_id"]},
        "bad base64": {**valid, "data": ["%%% not base64"]},
        "not a SEAL object": {**valid, "data": [base64.b64encode(b"hello, not a ciphertext").decode()]},
        "corrupted field": {**valid, "data": [base64.b64encode(corrupted).decode()]},
        "wrong ciphertext count": {**valid, "data": valid["data"] * 2},
        "unknown key_id": {**valid, "key_id": "no-such-keys"},
        "foreign account": {**valid, "conn_str": "AccountName=attacker;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/a"},
    }
    return {kind: body if isinstance(body, bytes) else json.dumps(body).encode() for kind, body in variants.items()}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def drive(url: str, plan: list[tuple[str, bytes]], concurrency: int) -> list[tuple[str, int, float, bytes]]:
    results: list[tuple[str, int, float, bytes]] = []
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=TEST_HEADERS,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            while not queue.empty():
                kind, body = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.post("/score", content=body, headers={"Content-Type": "application/json"})
                    status, content = response.status_code, response.content
                except httpx.HTTPError as exc:
                    status, content = 0, repr(exc).encode()
                results.append((kind, status, (time.perf_counter() - started) * 1000,
                                content if kind.startswith("valid") else b""))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mnist-dir", type=Path)
    args = parser.parse_args(argv)
    images = load_evaluation_images(args.mnist_dir)[0][:16]
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)

    with running_azurite() as conn_str, tempfile.TemporaryDirectory() as workdir:
        with running_service({"AZURE_STORAGE_CONNECTION_STRING": conn_str}, Path(workdir) / "service.log") as service, \
                AzureMLSession(url=service.url, conn_str=conn_str, container="load-keys",
                            api_key=TEST_API_KEY) as session:
            valid = [session.request_body(image / 255.0).encode() for image in images]
            expected = labels_from_scores(np.stack([model.scores(image / 255.0) for image in images]), model.classes)
            session.post(valid[0].decode())  # warm-up: keys downloaded and prepared in a worker
            malformed = malformed_bodies(json.loads(valid[0]))
            oversized = json.dumps({**json.loads(valid[0]), "padding": "x" * (5 << 20)}).encode()
            kinds = list(malformed)
            plan = []
            for index in range(args.requests):
                if index % VALID_EVERY == 0:
                    plan.append((f"valid:{index // VALID_EVERY % len(valid)}", valid[index // VALID_EVERY % len(valid)]))
                elif index % OVERSIZED_EVERY == 1:
                    plan.append(("oversized body", oversized))
                else:
                    kind = kinds[index % len(kinds)]
                    plan.append((kind, malformed[kind]))
            rss_before = service.memory_mib()
            started = time.perf_counter()
            results = asyncio.run(drive(service.url, plan, args.concurrency))
            elapsed = time.perf_counter() - started
            rss_after = service.memory_mib()
            alive = service.process.poll() is None
            # Decrypt a sample of the valid replies and compare with the plaintext model.
            checked = wrong = 0
            for kind, status, _, content in results:
                if not kind.startswith("valid") or status != 200 or checked >= 100:
                    continue
                label = labels_from_scores(np.atleast_2d(session.encryptor.decrypt(json.loads(content))), model.classes)[0]
                wrong += label != expected[int(kind.split(":")[1])]
                checked += 1

    valid_latencies = [ms for kind, _, ms, _ in results if kind.startswith("valid")]
    valid_failures = sum(1 for kind, status, _, _ in results if kind.startswith("valid") and status != 200)
    other = Counter((kind, status) for kind, status, _, _ in results if not kind.startswith("valid"))
    other_latencies = [ms for kind, _, ms, _ in results if not kind.startswith("valid")]
    print(f"requests: {len(results)} in {elapsed:.1f} s ({len(results) / elapsed:.0f}/s), {args.concurrency} in flight")
    print(f"valid:     {len(valid_latencies)}, failures {valid_failures}, "
          f"p50 {percentile(valid_latencies, 50):.0f} ms, p99 {percentile(valid_latencies, 99):.0f} ms; "
          f"{checked} decrypted, {wrong} not a label of the plaintext model")
    print(f"malformed: {len(other_latencies)}, p50 {percentile(other_latencies, 50):.1f} ms, "
          f"p99 {percentile(other_latencies, 99):.1f} ms")
    for (kind, status), count in sorted(other.items()):
        print(f"  {kind:<24}{status}  x{count}")
    print(f"service memory (web process + workers): {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")
    print(f"service alive throughout: {alive}")
    if valid_failures or wrong or not alive or any(status >= 500 or status == 0 for (_, status) in other):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
