"""Cosine k-nearest neighbours that never count a point's own copies as neighbours.

DS2's public code loads every embedding twice, so with few samples each point's nearest
neighbour is its own duplicate and the 2-NN consensus degenerates to self-agreement. Here a
point's neighbours exclude itself and every exact duplicate (cosine distance <= DUPLICATE_DISTANCE,
which also absorbs the float noise of encoding the same text in different batches).
"""

from __future__ import annotations

import numpy as np

DUPLICATE_DISTANCE = 1e-6
_CHUNK = 1024  # query rows per distance block: bounds memory at _CHUNK x n floats


def nearest_neighbours(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine distances (1 - cos) of each row's k nearest distinct neighbours.

    `embeddings` must be L2-normalised. Rows with fewer than k distinct other points get
    distance inf (and an arbitrary index) in the missing slots; callers skip those slots.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    n = len(emb)
    idx = np.zeros((n, k), dtype=np.int64)
    dist = np.full((n, k), np.inf)
    width = min(k, n)
    if width == 0:
        return idx, dist
    for first in range(0, n, _CHUNK):
        d = 1.0 - emb[first : first + _CHUNK] @ emb.T
        d[d <= DUPLICATE_DISTANCE] = np.inf
        part = np.argpartition(d, width - 1, axis=1)[:, :width]
        part_d = np.take_along_axis(d, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        idx[first : first + len(d), :width] = np.take_along_axis(part, order, axis=1)
        dist[first : first + len(d), :width] = np.take_along_axis(part_d, order, axis=1)
    return idx, dist
