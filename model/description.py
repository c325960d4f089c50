"""`model-settings.json`: what a prepared model folder declares beside its pickle.

    {"name", "version", "model_file", "features",
     "outputs": {kind, estimator, classes, proba, link, ...}   (model.outputs.Outputs)
     "v1": {"input_max", "input_offsets", "input_scales", "input_low", "input_high", "weight_bits"}
     "calibration": {what `python -m model.prepare` measured on its data}}

Written by `python -m model.prepare` (or `python -m model.train` for the bundled model) and read
by the service. The input ranges, the output rule and the classes are public: the service returns
them in the model's description (docs/security.md, model privacy). A folder without this file is
served on `POST /score` only, unless its inputs are known otherwise (`declared_inputs`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bfv.inputs import InputEncoding
from bfv.plan import WEIGHT_BITS
from model.outputs import Outputs

SETTINGS_FILE = "model-settings.json"
# The Azure ML tutorial's model file and the bundled one take MNIST pixels / 255.
PIXEL_MODEL_FILES = frozenset({"sklearn_mnist_model.pkl"})
MNIST_FEATURES = 784


class DescriptionError(ValueError):
    """model-settings.json is missing a field, or does not match its model."""


@dataclass(frozen=True)
class ModelDescription:
    name: str
    version: str
    model_file: str
    features: int
    outputs: Outputs
    inputs: InputEncoding | None  # None: the v1 protocol cannot serve the model (inputs not declared)
    weight_bits: int | tuple[int, ...] = WEIGHT_BITS  # a network's: one per layer
    calibration: dict | None = None

    def to_json(self) -> dict:
        body: dict = {"name": self.name, "version": self.version, "model_file": self.model_file,
                      "features": self.features, "outputs": self.outputs.describe()}
        if self.inputs is not None:
            bits = self.weight_bits if isinstance(self.weight_bits, int) else list(self.weight_bits)
            body["v1"] = {**self.inputs.describe(), "weight_bits": bits}
        if self.calibration is not None:
            body["calibration"] = self.calibration
        return body

    def save(self, folder: Path) -> Path:
        path = folder / SETTINGS_FILE
        text = json.dumps(self.to_json(), indent=1)
        # Lists of numbers on one line each: one line per field, not per feature.
        text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]",
                      lambda found: "[" + ", ".join(value.strip() for value in found.group(1).split(",")) + "]", text)
        path.write_text(text + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> ModelDescription | None:
        """The folder's description, or None when it has no model-settings.json."""
        path = folder / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            body = json.loads(path.read_text())
            v1 = body.get("v1")
            inputs = InputEncoding.from_description(v1) if v1 else None
            bits = v1.get("weight_bits", WEIGHT_BITS) if v1 else WEIGHT_BITS
            return cls(name=str(body["name"]), version=str(body["version"]), model_file=str(body["model_file"]),
                       features=int(body["features"]), outputs=Outputs.from_description(body["outputs"]),
                       inputs=inputs, weight_bits=tuple(int(b) for b in bits) if isinstance(bits, list) else int(bits),
                       calibration=body.get("calibration"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DescriptionError(f"{path} is not a valid model description: {type(exc).__name__}: {exc}") from None


def declared_inputs(model_file: str, features: int) -> InputEncoding | None:
    """Inputs known without a description: the tutorial's MNIST model file takes pixels / 255."""
    if model_file in PIXEL_MODEL_FILES and features == MNIST_FEATURES:
        return InputEncoding.pixels(features)
    return None
