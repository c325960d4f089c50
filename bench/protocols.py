"""`python -m bench.protocols`: the Azure ML contract and the v1 protocol, on the same images, in one run.

Starts Azurite and one service per Azure ML engine (`seal`, and `eiserver` on a few images since it
takes ~10 s each) with `--workers` workers (default 2, the service's default on this machine),
then scores the same MNIST test images with the tutorial's client (`POST /score`) and with
`ScoringClient` one image per request and in batches. Prints ms per image (server and end to end;
server = the engine's own time, `x-engine-ms`), bytes on the wire and agreement with the plaintext
model (for the bundled square network, with the quantized network it plans: exact equality); then
the v1 protocol's figures in-process and over HTTP against its goals, as
multiples of a floor measured in the same run (`bench.v1_timing`), before and after the rest:
the faster of the two is the one the goals are read against.
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

from bench.v1_timing import (GOALS, bundled_network_plan, in_process_seconds, network_batch_in_process_seconds,
                             network_in_process_seconds,
                             seal_floor_seconds)
from bench.processes import TEST_API_KEY, TEST_HEADERS, running_azurite, running_service
from client.scoring import ScoringClient, Traffic, model_prefix
from client.azureml import AzureMLSession
from model.outputs import labels_from_scores
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from model.mnist import load_evaluation_images


NETWORK_ROW = "v1 network /v1/models/mnist-square/score/rounds"
NETWORK_BATCH_ROW = "v1 network /v1/models/mnist-square/score/batch/rounds"


def _azureml_row(name: str, url: str, conn_str: str, images: np.ndarray, expected: np.ndarray) -> dict:
    with AzureMLSession(url=url, conn_str=conn_str, container="bench-keys", send_conn_str=False,
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


def _v1_row(name: str, url: str, images: np.ndarray, expected: np.ndarray, batch: int, model: str | None = None
            ) -> dict:
    """Means per image over the run, and medians over requests (robust to a busy machine)."""
    with ScoringClient(url, api_key=TEST_API_KEY, prefix=model_prefix(model)) as client:
        client.predict(images[:8], batch_size=1)  # every worker fetches and prepares the key first
        for _ in range(2 if batch > 1 else 0):  # and what its first batch prepares (a network's batch rounds)
            client.predict(images[:8], batch_size=4)
        client.traffic = Traffic()
        marks = [(time.perf_counter(), 0.0, 0)]

        def request_done(samples: int) -> None:
            marks.append((time.perf_counter(), client.traffic.server_seconds, samples))

        labels, _ = client.predict(images, batch_size=batch, progress=request_done)
        per_request = [((now - before) / samples, (server - server_before) / samples)
                       for (before, server_before, _), (now, server, samples) in zip(marks, marks[1:])]
        traffic, count = client.traffic, len(images)
        return {"protocol": name, "images": count, "key_bytes": client.key_bytes,
                "server_ms": traffic.server_seconds * 1000 / count,
                "end_to_end_ms": traffic.total_seconds * 1000 / count,
                "server_ms_median": float(np.median([server for _, server in per_request])) * 1000,
                "end_to_end_ms_median": float(np.median([total for total, _ in per_request])) * 1000,
                "request_bytes": traffic.request_bytes / count, "reply_bytes": traffic.reply_bytes / count,
                "agreement": float(np.mean(labels == expected))}


def _at_least_one(text: str) -> int:
    """A count of images the run cannot skip: the linear rows are what the goals are read against."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: the linear model's rows are always measured, so at least 1")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=Path, help="folder with the MNIST test set (default: bundled sample)")
    parser.add_argument("--azureml-images", type=int, default=20, help="0 skips the Azure ML contract's seal engine")
    parser.add_argument("--eiserver-images", type=int, default=2, help="0 skips the EIServer engine")
    parser.add_argument("--single-images", type=_at_least_one, default=500,
                        help="images of the linear model one per request (the goals' reference: at least 1)")
    parser.add_argument("--batch-images", type=_at_least_one, default=8192,
                        help="images of the linear model in batches of --batch (at least 1)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--network-images", type=int, default=300, help="images scored by the bundled square "
                        "network, one per request (0 skips it)")
    parser.add_argument("--network-batch-images", type=int, default=8192, help="images scored by the bundled square "
                        "network in batches of --batch (0 skips it)")
    parser.add_argument("--workers", type=int, default=2, help="the service's WORKER_COUNT")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    images, _, source = load_evaluation_images(args.mnist_dir)
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    expected = labels_from_scores(model.scores(images.reshape(len(images), -1) / 255.0), None)
    network_plan = bundled_network_plan()
    network_batch = min(args.batch, network_plan.public.max_batch)  # blocks of N samples, as many as it takes

    def network_labels(chosen: np.ndarray) -> np.ndarray:
        """The quantized network's labels of these images (pixels / 255, encoded on the network's input levels)."""
        return np.asarray(network_plan.quantized_scores(chosen)).argmax(axis=1)

    console = Console(stderr=True)
    with console.status("the floor, before"):
        floors = [seal_floor_seconds(model)]
    rows = []
    with tempfile.TemporaryDirectory() as workdir, running_azurite() as conn_str:
        env = {"AZURE_STORAGE_CONNECTION_STRING": conn_str, "WORKER_COUNT": str(args.workers)}
        with running_service({**env, "SCORING_ENGINE": "seal"}, Path(workdir) / "seal.log") as service:
            if args.azureml_images:
                with console.status("Azure ML contract, seal engine"):
                    rows.append(_azureml_row("Azure ML /score, seal engine", service.url, conn_str,
                                          images[: args.azureml_images], expected[: args.azureml_images]))
            with console.status("v1 protocol, one image per request"):
                rows.append(_v1_row("v1 /v1/score", service.url, images[: args.single_images],
                                        expected[: args.single_images], 1))
            with console.status(f"v1 protocol, batches of {args.batch}"):
                rows.append(_v1_row(f"v1 /v1/score/batch ({args.batch})", service.url,
                                        images[: args.batch_images], expected[: args.batch_images], args.batch))
            if args.network_images:
                with console.status("v1 protocol, the square network, one image per two-round request"):
                    chosen = images[: args.network_images].reshape(-1, 784) / 255.0  # the ONNX network's inputs
                    quantized = network_labels(chosen)
                    rows.append(_v1_row(f"{NETWORK_ROW} (2 rounds)", service.url, chosen, quantized, 1,
                                        "mnist-square"))
            if args.network_batch_images:
                with console.status(f"v1 protocol, the square network, batches of {network_batch} in two rounds"):
                    chosen = images[: args.network_batch_images].reshape(-1, 784) / 255.0
                    quantized = network_labels(chosen)
                    rows.append(_v1_row(f"{NETWORK_BATCH_ROW} ({network_batch}, 2 rounds)", service.url, chosen,
                                        quantized, network_batch, "mnist-square"))
        if args.eiserver_images:
            with running_service({**env, "SCORING_ENGINE": "eiserver"}, Path(workdir) / "eiserver.log") as service, \
                    console.status("Azure ML contract, EIServer engine"):
                rows.append(_azureml_row("Azure ML /score, EIServer", service.url, conn_str,
                                      images[: args.eiserver_images], expected[: args.eiserver_images]))
    with console.status("v1 protocol in-process, and the floor again"):
        inputs = images.reshape(len(images), -1).astype(np.int64)
        in_process = in_process_seconds(model, inputs[: args.single_images], inputs[: args.batch])
        encoded = network_plan.public.inputs.encode(images.reshape(len(images), -1) / 255.0)  # on its levels
        if args.network_images:
            in_process.update(network_in_process_seconds(encoded[: min(args.network_images, 200)]))
        if args.network_batch_images:
            in_process.update(network_batch_in_process_seconds(encoded[:network_batch]))
        floors.append(seal_floor_seconds(model))
    # The machine's speed drifts during a run: the goals are read against the faster of the two
    # floors (the stricter reading), both printed.
    floor = min(floors)
    goals = _goals(rows, in_process, floor)
    if args.json:
        print(json.dumps({"rows": rows, "floor_ms": floor * 1000, "floors_ms": [f * 1000 for f in floors],
                          "goals": goals}, indent=2))
        return
    table = Table(title=f"MNIST ({source}), {args.workers} worker(s); per image", show_lines=False)
    for column in ("protocol", "images", "server ms", "end-to-end ms", "request B", "reply B", "key B", "agreement"):
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for row in rows:
        table.add_row(row["protocol"], str(row["images"]), f"{row['server_ms']:.3f}", f"{row['end_to_end_ms']:.2f}",
                      f"{row['request_bytes']:,.0f}", f"{row['reply_bytes']:,.0f}", f"{row['key_bytes']:,}",
                      f"{row['agreement']:.4f}")
    Console(width=160).print(table)
    goal_table = Table(title=f"v1 protocol against its goals; floor (multiply_plain + inverse NTT, "
                             f"N=4096, one prime) = {floor * 1e6:.0f} µs, the faster of "
                             f"{' and '.join(f'{f * 1e6:.0f}' for f in floors)} µs measured before and after")
    for column in ("measure", "mean ms / image", "median ms / image", "median × floor", "goal (× floor)", "met"):
        goal_table.add_column(column, justify="left" if column == "measure" else "right")
    for goal in goals:
        goal_table.add_row(goal["measure"], f"{goal['mean_ms']:.3f}", f"{goal['ms']:.3f}", f"{goal['ratio']:.2f}",
                           "" if goal["goal"] is None else f"≤ {goal['goal']}",
                           "" if goal["goal"] is None else ("yes" if goal["ratio"] <= goal["goal"] else "no"))
    Console(width=160).print(goal_table)


def _goals(rows: list[dict], in_process: dict[str, dict[str, float]], floor: float) -> list[dict]:
    """The v1 figures (mean and median per image) as multiples of the floor (median against
    median), with the goal each one has over HTTP."""
    single = next(row for row in rows if row["protocol"] == "v1 /v1/score")
    batch = next(row for row in rows if row["protocol"].startswith("v1 /v1/score/batch"))

    def http(row: dict, measure: str) -> tuple[float, float]:
        return row[f"{measure}_ms"], row[f"{measure}_ms_median"]

    def local(measure: str) -> tuple[float, float]:
        return in_process[measure]["mean"] * 1000, in_process[measure]["median"] * 1000

    figures = [("single, in-process server", local("single_server"), None),
               ("single, in-process between requests (zero encryptions)", local("single_between"), None),
               ("single, HTTP server (x-engine-ms)", http(single, "server"), GOALS["single_server"]),
               ("single, HTTP end to end", http(single, "end_to_end"), GOALS["single_end_to_end"]),
               ("batch, in-process server", local("batch_server"), None),
               ("batch, HTTP server (x-engine-ms)", http(batch, "server"), GOALS["batch_server"])]
    network = next((row for row in rows if row["protocol"].startswith(NETWORK_ROW)), None)
    if network is not None:
        figures += [("network, in-process server (all rounds)", local("network_server"), None),
                    ("network, in-process client (all rounds)", local("network_client"), None),
                    ("network, in-process between requests (u and errors)", local("network_between"), None),
                    ("network, HTTP server (x-engine-ms, all rounds)", http(network, "server"),
                     GOALS["network_server"]),
                    ("network, HTTP end to end (all rounds)", http(network, "end_to_end"),
                     GOALS["network_end_to_end"])]
    network_batch = next((row for row in rows if row["protocol"].startswith(NETWORK_BATCH_ROW)), None)
    if network_batch is not None:
        figures += [("network batch, in-process server (all rounds)", local("network_batch_server"), None),
                    ("network batch, in-process client (all rounds)", local("network_batch_client"), None),
                    ("network batch, HTTP server (x-engine-ms, all rounds)", http(network_batch, "server"),
                     GOALS["network_batch_server"])]
    return [{"measure": name, "mean_ms": mean, "ms": median, "ratio": median / (floor * 1000), "goal": goal}
            for name, (mean, median), goal in figures]


if __name__ == "__main__":
    main()
