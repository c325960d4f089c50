"""How a model's real-valued features become the integers a client encrypts, feature by feature.

    x_int[j] = round((x[j] - offset[j]) * scale[j]),   |x_int[j]| <= input_max

Each feature has its own declared range [low, high] (public, in the model description), from
calibration data (`python -m model.prepare`) or from what the model is known to take (MNIST
pixels / 255 in [0, 1]). A value outside its range cannot be encoded faithfully, so it is refused
with the feature's index and range, unless the caller asks for clipping. The server folds the
offsets and scales into the weights (`bfv.plan.quantize`), so encoding costs nothing per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_INPUT_BITS = 24  # |x_int| < 2^24: the products with the weights stay far inside the plaintext modulus


class InputRangeError(ValueError):
    """A sample's feature is outside the range the model's inputs were declared for."""


@dataclass(frozen=True, eq=False)
class InputEncoding:
    offsets: np.ndarray  # (features,) float64
    scales: np.ndarray  # (features,) float64, > 0
    input_max: int
    low: np.ndarray  # (features,) declared range, inclusive
    high: np.ndarray

    def __post_init__(self) -> None:
        shapes = {array.shape for array in (self.offsets, self.scales, self.low, self.high)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"offsets, scales and ranges must be 1-D arrays of one length, got {sorted(shapes)}")
        arrays = np.stack([self.offsets, self.scales, self.low, self.high])
        if not np.isfinite(arrays).all() or (self.scales <= 0).any() or (self.low > self.high).any():
            raise ValueError("input offsets, scales and ranges must be finite, scales positive, low <= high")
        if not 1 <= self.input_max < 2**MAX_INPUT_BITS:
            raise ValueError(f"input_max {self.input_max} must be in [1, 2^{MAX_INPUT_BITS})")
        # Every value of a declared range must encode within +-input_max.
        reach = np.maximum(np.abs(self.low - self.offsets), np.abs(self.high - self.offsets)) * self.scales
        if (np.rint(reach) > self.input_max).any():
            worst = int(np.argmax(reach))
            raise ValueError(f"feature {worst}'s range [{self.low[worst]:g}, {self.high[worst]:g}] encodes beyond "
                             f"+-{self.input_max}")

    def _fields(self) -> tuple:
        return (self.input_max, *(array.tobytes() for array in (self.offsets, self.scales, self.low, self.high)))

    def __eq__(self, other: object) -> bool:  # arrays compare by value: two plans of one model are equal
        return isinstance(other, InputEncoding) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    @property
    def n_features(self) -> int:
        return int(self.offsets.shape[0])

    @classmethod
    def from_ranges(cls, low: np.ndarray, high: np.ndarray, input_max: int) -> InputEncoding:
        """Each range centred on 0 and spread over +-input_max: the finest grid its range allows."""
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        half = (high - low) / 2
        scales = np.where(half > 0, input_max / np.where(half > 0, half, 1.0), 1.0)  # a constant feature encodes as 0
        return cls(offsets=low + half, scales=scales, input_max=int(input_max), low=low, high=high)

    @classmethod
    def uniform(cls, n_features: int, scale: float, input_max: int) -> InputEncoding:
        """One scale for every feature, no offset: x in [-input_max / scale, input_max / scale]."""
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"input scale {scale} must be positive")
        reach = input_max / scale
        return cls(offsets=np.zeros(n_features), scales=np.full(n_features, float(scale)), input_max=int(input_max),
                   low=np.full(n_features, -reach), high=np.full(n_features, reach))

    @classmethod
    def pixels(cls, n_features: int) -> InputEncoding:
        """Images as scikit-learn's MNIST models take them, pixels / 255 in [0, 1]: the uint8 pixels themselves."""
        return cls(offsets=np.zeros(n_features), scales=np.full(n_features, 255.0), input_max=255,
                   low=np.zeros(n_features), high=np.ones(n_features))

    @property
    def takes_pixels(self) -> bool:
        """Whether uint8 pixels are the encoded integers as they are (offset 0, scale 255)."""
        return bool(self.input_max >= 255 and (self.offsets == 0).all() and (self.scales == 255).all())

    def out_of_range(self, samples: np.ndarray) -> tuple[int, int] | None:
        """(sample, feature) of the first value outside its declared range, or None."""
        outside = (samples < self.low) | (samples > self.high)
        if not outside.any():
            return None
        sample, feature = np.argwhere(outside)[0]
        return int(sample), int(feature)

    def encode(self, samples: np.ndarray, clip: bool = False) -> np.ndarray:
        """The integers to encrypt for `samples` (samples, features), as scikit-learn sees them.

        Raises `InputRangeError` naming the first value outside its declared range, unless `clip`:
        then such values are encoded as the nearest end of their range."""
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != self.n_features:
            raise ValueError(f"expected samples of {self.n_features} features, got shape {samples.shape}")
        if not np.isfinite(samples).all():
            raise ValueError("Input X contains NaN or infinity: an encrypted model scores finite values only")
        if clip:
            samples = np.clip(samples, self.low, self.high)
        elif (found := self.out_of_range(samples)) is not None:
            sample, feature = found
            raise InputRangeError(f"sample {sample}, feature {feature}: {samples[sample, feature]:g} is outside the "
                                  f"range [{self.low[feature]:g}, {self.high[feature]:g}] the model's inputs were "
                                  "declared for (pass clip=True to clip to it)")
        encoded = np.rint((samples - self.offsets) * self.scales)
        return np.clip(encoded, -self.input_max, self.input_max).astype(np.int64)

    def describe(self) -> dict:
        return {"input_max": self.input_max, "input_offsets": self.offsets.tolist(),
                "input_scales": self.scales.tolist(), "input_low": self.low.tolist(), "input_high": self.high.tolist()}

    @classmethod
    def from_description(cls, body: dict) -> InputEncoding:
        return cls(offsets=np.asarray(body["input_offsets"], dtype=np.float64),
                   scales=np.asarray(body["input_scales"], dtype=np.float64), input_max=int(body["input_max"]),
                   low=np.asarray(body["input_low"], dtype=np.float64),
                   high=np.asarray(body["input_high"], dtype=np.float64))
