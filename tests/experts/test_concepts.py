"""ImageNet concepts recovered from stored appearance features."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mmx import schema
from mmx.config import ExpertsConfig
from mmx.experts import concepts
from mmx.experts.registry import get_expert


@pytest.fixture(scope="module")
def expert():
    return get_expert("appearance", ExpertsConfig())


def test_imagenet_names_are_the_1k_classes_in_index_order() -> None:
    names = concepts.imagenet_names()
    assert len(names) == 1000 and len(set(names)) > 990
    assert names[0] == "tench" and names[483] == "castle" and names[978] == "beach"


def test_head_on_stored_features_equals_the_cnn_classifier(expert) -> None:
    # The stored (pooled) features through the recovered head give the CNN's own top class.
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(3, 144, 256, 3), dtype=np.uint8)
    frames[1] = np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None]  # a gradient
    weight, bias = concepts.classifier_head(ExpertsConfig())
    assert weight.shape == (1000, 1280) and bias.shape == (1000,)
    pooled = expert(frames)
    np.testing.assert_array_equal(concepts.top_classes(pooled, weight, bias), expert.top_class(frames))


def test_concept_counts_per_trailer_from_a_features_table(expert) -> None:
    weight, bias = concepts.classifier_head(ExpertsConfig())
    # Clip features pointing along one class's weight row are classified as that class.
    castle, beach = weight[483] * 50, weight[978] * 50
    rows = [
        {"trailer_id": "a", "n_clips": 3, "appearance": np.concatenate([castle, castle, beach])},
        {"trailer_id": "b", "n_clips": 1, "appearance": beach},
        {"trailer_id": "c", "n_clips": 0, "appearance": np.zeros(0, np.float32)},
    ]
    table = pa.Table.from_pylist(
        [{**r, "appearance": r["appearance"].astype(np.float32).tolist()} for r in rows],
        schema=pa.schema([f for f in schema.FEATURES if f.name in rows[0]]),
    )
    counts = concepts.concept_counts(table, weight, bias, rows_per_chunk=2)
    assert counts.shape == (3, 1000)
    assert counts[0, 483] == 2 and counts[0, 978] == 1 and counts[0].sum() == 3
    assert counts[1, 978] == 1 and counts[1].sum() == 1
    assert counts[2].sum() == 0
