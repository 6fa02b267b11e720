"""Cosine similarity of the clients' adapter updates in one round (for the run report).

Clients with similar data move the adapter the same way; a client whose update points elsewhere
(very different or much noisier data) shows up as a low row in the heatmap. Computed on the
server from the weights it receives anyway, so nothing extra leaves a client.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import ArrayRecord


def flat_update(global_arrays: ArrayRecord, client_arrays: ArrayRecord) -> np.ndarray:
    """The client's weights minus the global weights it started from, as one float64 vector."""
    parts = [client_arrays[k].numpy().astype(np.float64).ravel() - global_arrays[k].numpy().astype(np.float64).ravel()
             for k in global_arrays]
    return np.concatenate(parts) if parts else np.zeros(0)


def cosine_matrix(updates: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise cosine similarity; a zero update has similarity 0 with everything (1 with itself)."""
    if not updates:
        return np.zeros((0, 0))
    stacked = np.stack(updates)
    norms = np.linalg.norm(stacked, axis=1)
    unit = stacked / np.where(norms > 0, norms, 1.0)[:, None]
    matrix = unit @ unit.T
    np.fill_diagonal(matrix, 1.0)
    return np.clip(matrix, -1.0, 1.0)
