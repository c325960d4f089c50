"""`python -m bench.protocols`: the seed protocol and the native one, on the same images, in one run.

Starts Azurite and one service per seed engine (`seal`, and `eiserver` on a few images since it
takes ~10 s each), then scores the same MNIST test images with the seed client (`POST /score`) and
with `ScoringClient` one image per request and in batches. Prints ms per image (server and end to
end; server = the engine's own time, `x-engine-ms`), bytes on the wire and agreement with the plaintext model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.processes import TEST_API_KEY, TEST_HEADERS, running_azurite, running_service
from client.scoring import ScoringClient
from client.seed import SeedSession
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import labels_from_scores, load_linear_model
from model.mnist import load_evaluation_images


def _seed_row(name: str, url: str, conn_str: str, images: np.ndarray, expected: np.ndarray) -> dict:
    with SeedSession(url=url, conn_str=conn_str, container="bench-keys", send_conn_str=False,
                     api_key=TEST_API_KEY) as session:
        server = total = sent = received = 0.0
        agree = 0
        for image, label in zip(images, expected):
            started = time.perf_counter()
            body = session.request_body(image / 255.0)
            response = httpx.post(f"{url}/score", content=body,
                                  headers={"content-type": "application/json", **TEST_HEADERS},
                                  timeout=600)
            scores = session.encryptor.decrypt(response.json())
            total += time.perf_counter() - started
            server += float(response.headers["x-engine-ms"]) / 1000
            sent, received = sent + len(body), received + len(response.content)
            agree += labels_from_scores(np.atleast_2d(scores), None)[0] == label
        count = len(images)
        return {"protocol": name, "images": count, "key_bytes": session.key_bytes,
                "server_ms": server * 1000 / count, "end_to_end_ms": total * 1000 / count,
                "request_bytes": sent / count, "reply_bytes": received / count, "agreement": agree / count}


def _native_row(name: str, url: str, images: np.ndarray, expected: np.ndarray, batch: int) -> dict:
    with ScoringClient(url, api_key=TEST_API_KEY) as client:
        labels, _ = client.predict(images, batch_size=batch)
        traffic, count = client.traffic, len(images)
        return {"protocol": name, "images": count, "key_bytes": client.key_bytes,
                "server_ms": traffic.server_seconds * 1000 / count,
                "end_to_end_ms": traffic.total_seconds * 1000 / count,
                "request_bytes": traffic.request_bytes / count, "reply_bytes": traffic.reply_bytes / count,
                "agreement": float(np.mean(labels == expected))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=Path, help="folder with the MNIST test set (default: bundled sample)")
    parser.add_argument("--seed-images", type=int, default=20)
    parser.add_argument("--eiserver-images", type=int, default=2, help="0 skips the EIServer engine")
    parser.add_argument("--single-images", type=int, default=500)
    parser.add_argument("--batch-images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    images, _, source = load_evaluation_images(args.mnist_dir)
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    expected = labels_from_scores(model.scores(images.reshape(len(images), -1) / 255.0), None)
    console = Console(stderr=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir, running_azurite() as conn_str:
        env = {"AZURE_STORAGE_CONNECTION_STRING": conn_str, "WORKER_COUNT": "1"}
        with running_service({**env, "SCORING_ENGINE": "seal"}, Path(workdir) / "seal.log") as service:
            with console.status("seed protocol, seal engine"):
                rows.append(_seed_row("seed /score, seal engine", service.url, conn_str,
                                      images[: args.seed_images], expected[: args.seed_images]))
            with console.status("native protocol, one image per request"):
                rows.append(_native_row("native /v1/score", service.url, images[: args.single_images],
                                        expected[: args.single_images], 1))
            with console.status(f"native protocol, batches of {args.batch}"):
                rows.append(_native_row(f"native /v1/score/batch ({args.batch})", service.url,
                                        images[: args.batch_images], expected[: args.batch_images], args.batch))
        if args.eiserver_images:
            with running_service({**env, "SCORING_ENGINE": "eiserver"}, Path(workdir) / "eiserver.log") as service, \
                    console.status("seed protocol, EIServer engine"):
                rows.append(_seed_row("seed /score, EIServer", service.url, conn_str,
                                      images[: args.eiserver_images], expected[: args.eiserver_images]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"MNIST ({source}), 1 worker; per image", show_lines=False)
    for column in ("protocol", "images", "server ms", "end-to-end ms", "request B", "reply B", "key B", "agreement"):
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for row in rows:
        table.add_row(row["protocol"], str(row["images"]), f"{row['server_ms']:.3f}", f"{row['end_to_end_ms']:.2f}",
                      f"{row['request_bytes']:,.0f}", f"{row['reply_bytes']:,.0f}", f"{row['key_bytes']:,}",
                      f"{row['agreement']:.4f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
