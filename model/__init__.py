"""The model artefact and the code that reads it.

`BUNDLED_MODEL_DIR` holds `sklearn_mnist_model.pkl`, trained by `python -m model.train`, and, in
`mnist-square/1/`, the square network trained by `python -m model.train --kind square-mlp`; the
service serves both when `AZUREML_MODEL_DIR` is not set (the linear one is the default model).
"""

from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_FILE = "sklearn_mnist_model.pkl"
BUNDLED_NETWORK_DIR = BUNDLED_MODEL_DIR / "mnist-square" / "1"
BUNDLED_NETWORK_FILE = "mnist_square.onnx"
