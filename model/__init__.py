"""The model artefact and the code that reads it.

`BUNDLED_MODEL_DIR` holds `sklearn_mnist_model.pkl`, trained by `python -m model.train`; the service
loads it when `AZUREML_MODEL_DIR` is not set.
"""

from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_FILE = "sklearn_mnist_model.pkl"
