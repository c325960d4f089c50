"""Samples of a model's input features from a file: what `python -m model.prepare` calibrates on and
`python -m client predict --input` scores. Numpy only (the client reads them without scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CalibrationError(ValueError):
    """A file of samples cannot be read, or does not fit the model."""


def read_samples(path: Path) -> np.ndarray:
    """Samples (rows) of features (columns) from a .npy or .csv file."""
    try:
        if path.suffix == ".npy":
            samples = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            with path.open() as handle:
                first = handle.readline()
            try:
                [float(value) for value in first.strip().split(",")]
                header = 0
            except ValueError:  # a header row of names
                header = 1
            samples = np.loadtxt(path, delimiter=",", skiprows=header, ndmin=2)
        else:
            raise CalibrationError(f"{path}: expected a .npy or .csv file")
    except (OSError, ValueError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise CalibrationError(f"cannot read {path}: {exc}") from None
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or len(samples) == 0:
        raise CalibrationError(f"{path}: expected a 2-D array of samples x features, got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise CalibrationError(f"{path} contains NaN or infinity")
    return samples
