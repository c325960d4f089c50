"""`python -m bench.held_out_network`: a network the service has never seen, end to end, against onnxruntime.

Trains a 784-128-x²-10 network (another seed than the bundled one), writes it as ONNX in the other
spelling (`MatMul`, `Add`, `Pow`, `MatMul`, `Add`, `Softmax`; float32 input = pixels / 255), prepares
it with `python -m model.prepare --calibration` on its training images, serves it (Azurite, the
service), scores `--images` MNIST test images one per request and `--batch-images` in one batch with
`python -m client predict --input X.npy --json [--batch N]`, and prints how often the encrypted labels
equal onnxruntime's on the ONNX file itself, with the CLI's bytes and milliseconds per image.
onnxruntime is the reference only (the test extra); the service never uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.processes import PROJECT_ROOT, TEST_API_KEY, running_azurite, running_service
from model.mnist import load_bundled_training_sample, load_evaluation_images
from model.onnx_graphs import network_graph
from model.square_training import TrainingSettings, train_square_mlp

NAME = "held-out"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=Path, help="folder with the MNIST test set (default: bundled sample)")
    parser.add_argument("--images", type=int, default=1000, help="test images scored one per request")
    parser.add_argument("--batch-images", type=int, default=4096, help="test images scored in one batch (0 skips)")
    args = parser.parse_args(argv)
    import onnxruntime

    images, labels = load_bundled_training_sample()
    test_images, test_labels, source = load_evaluation_images(args.mnist_dir)
    test = (test_images[: max(args.images, args.batch_images)].reshape(-1, 784) / 255.0).astype(np.float32)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        network = train_square_mlp(images / 255.0, labels, TrainingSettings(seed=1), image_side=28)
        onnx_file = folder / f"{NAME}.onnx"
        onnx_file.write_bytes(network_graph(network, "matmul", name=NAME).SerializeToString())
        np.save(folder / "calibration.npy", (images / 255.0).astype(np.float32))
        runs = {"single": (args.images, 1), "batch": (args.batch_images, args.batch_images)}
        for name, (count, _) in runs.items():
            np.save(folder / f"{name}.npy", test[:count])
        subprocess.run([sys.executable, "-m", "model.prepare", str(onnx_file), "--calibration",
                        str(folder / "calibration.npy"), "--out", str(folder / "models" / NAME / "1"),
                        "--feature-range", "0", "1"], cwd=PROJECT_ROOT, check=True)
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        reference = session.run(None, {"input": test})[0].argmax(axis=1)
        with running_azurite() as conn_str, running_service(
                {"AZURE_STORAGE_CONNECTION_STRING": conn_str, "AZUREML_MODEL_DIR": str(folder / "models")},
                folder / "service.log") as service:
            results = {}
            for name, (count, batch) in runs.items():
                if not count:
                    continue
                done = subprocess.run(
                    [sys.executable, "-m", "client", "predict", "--url", service.url, "--model", NAME, "--input",
                     str(folder / f"{name}.npy"), "--batch", str(batch), "--json"], cwd=PROJECT_ROOT,
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(folder / "cache")})
                report = json.loads(done.stdout.strip().splitlines()[-1])
                predicted = np.array(report.pop("predictions"))
                results[name] = {
                    "images": count, "batch": batch,
                    "labels_equal_to_onnxruntime": float(np.mean(predicted == reference[:count])),
                    "accuracy_encrypted": float(np.mean(predicted == test_labels[:count])),
                    "accuracy_onnxruntime": float(np.mean(reference[:count] == test_labels[:count])),
                    **{key: report[key] for key in ("requests", "request_bytes_per_sample", "reply_bytes_per_sample",
                                                    "server_ms_per_sample", "end_to_end_ms_per_sample")}}
    print(json.dumps({"source": source, **results}, indent=1))


if __name__ == "__main__":
    main()
