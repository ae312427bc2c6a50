"""Metadata expert: a title's numeric facts (year, runtime) as a small per-title vector.

The values are :func:`mmx.metadata.numeric_features` (normalised year, log runtime and a known /
unknown indicator for each, fixed constants so a title's vector never moves when other titles
arrive), built by :mod:`mmx.titles` from the sidecar fields the expert ``needs``; the expert
declares them to the registry and passes them on. A title with neither year nor runtime has no
input and is masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmx.experts.registry import Expert, register_expert

NUMERIC_DIM = 4  # mmx.metadata.NUMERIC_FEATURES: year, log_runtime, has_year, has_runtime


@register_expert
class MetadataExpert(Expert):
    """Rows of numeric metadata features ``(N, 4)`` → float32 ``(N, 4)`` (unchanged)."""

    name = "metadata"
    dim = NUMERIC_DIM
    kind = "title"
    needs = ("year", "runtime_min")

    def __call__(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.asarray(np.stack(batch), np.float32)  # (N, 4)
        if out.shape[1] != self.dim:
            raise ValueError(f"metadata expert: expected (N, {self.dim}) rows, got {out.shape}")
        return out
