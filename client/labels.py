"""scikit-learn's decision rule, on scores however they were computed (decrypted, or in plaintext).

Here, in the client, because the client must label what it decrypts without scikit-learn installed.
"""

from __future__ import annotations

import numpy as np


def labels_from_scores(scores: np.ndarray, classes: np.ndarray | tuple | None) -> np.ndarray:
    """scikit-learn's decision rule for rows of scores: the sign for one output, argmax otherwise,
    mapped to `classes` (indices when there are none)."""
    scores = np.asarray(scores, dtype=float)
    indices = (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(axis=1)
    return indices if classes is None else np.asarray(classes)[indices]
