"""The static text backend: word-piece vectors distilled from MiniLM, a plot = their SIF mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import BertConfig, BertModel

from mmx.config import ConfigError, ExpertsConfig
from mmx.experts import static_text
from mmx.experts.text import TextExpert

DISTINCT = [
    "A retired hitman comes back for one last job in Paris.",
    "Two children build a treehouse and bake cookies with their grandmother.",
    "A vampire stalks a small town after dark.",
    "Astronauts repair their damaged space station near Mars.",
    "A football team fights to win the championship.",
]
PARAPHRASE = "An old assassin returns to carry out a final contract in France."


def tiny_model_and_tokenizer(seed: int = 0) -> tuple[BertModel, Tokenizer]:
    """A one-layer BERT over a 12-word WordLevel vocabulary (real classes, random weights)."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "night", "vampire", "kiss",
             "wedding", "robot", "planet"]
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=16)
    return BertModel(config, add_pooling_layer=False).eval(), tokenizer


def test_each_row_is_the_weighted_mean_output_of_its_piece() -> None:
    model, tokenizer = tiny_model_and_tokenizer()
    table = static_text.distil(model, tokenizer, batch_size=5)  # batches of 5, 5, 2 pieces
    assert table.shape == (12, 8) and table.dtype == np.float32
    weights = static_text.sif_weights(12)
    for piece in (0, 7, 11):
        ids = torch.tensor([[2, piece, 3]])
        with torch.inference_mode():
            hidden = model(input_ids=ids).last_hidden_state[0]  # (3, 8)
        np.testing.assert_allclose(table[piece], hidden.mean(0).numpy() * weights[piece],
                                   rtol=1e-5, atol=1e-6)


def test_sif_weights_grow_with_rank() -> None:
    w = static_text.sif_weights(30_522)
    assert np.all(np.diff(w) > 0) and 0 < w[0] < 0.01 and 0.9 < w[-1] < 1


def test_a_plot_is_the_normalised_mean_of_its_pieces() -> None:
    _, tokenizer = tiny_model_and_tokenizer()
    table = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    out = static_text.embed_static(table, tokenizer, ["the vampire", "kiss", "", "night night a"])
    expected = [table[[4, 7]].sum(0), table[8], np.zeros(8), table[[6, 6, 5]].sum(0)]
    expected = [e / max(np.linalg.norm(e), 1e-12) for e in expected]
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5, atol=1e-6)


def test_the_table_is_distilled_once_per_set_of_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static_text, "_TABLES", {})
    model, tokenizer = tiny_model_and_tokenizer()
    first = static_text.static_table(model, tokenizer)
    assert static_text.static_table(model, tokenizer) is first  # same weights: kept
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.mul_(-1.0)
    changed = static_text.static_table(model, tokenizer)
    assert len(static_text._TABLES) == 2 and not np.allclose(changed, first)


def test_config_rejects_int8_with_the_static_backend() -> None:
    with pytest.raises(ConfigError, match="text_int8"):
        ExpertsConfig(text_backend="static", text_int8=True)


@pytest.fixture(scope="module")
def experts() -> tuple[TextExpert, TextExpert]:
    """(static, minilm) over the packaged weights; the static table is distilled here."""
    static = TextExpert(ExpertsConfig(text_backend="static", text_threads=2))
    assert static.backend == "static"
    return static, TextExpert(threads=2)


def test_static_vectors_are_normalised_repeatable_and_masked(
        experts: tuple[TextExpert, TextExpert]) -> None:
    static, _ = experts
    vectors, has = static.embed([DISTINCT[0], None, "  ", DISTINCT[2], "\x00\u200b"])
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_array_equal(has, [True, False, False, True, False])  # no piece: masked
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [1, 0, 0, 1, 0], atol=1e-5)
    alone = np.concatenate([static([p]) for p in DISTINCT])  # no padding leaks into a mean
    together = static(DISTINCT)
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_array_equal(static(DISTINCT), together)  # twice: bitwise


def test_static_vectors_live_in_minilms_space(experts: tuple[TextExpert, TextExpert]) -> None:
    """Each plot's static vector is nearer its own MiniLM vector than any other plot's is, and
    a paraphrase stays nearer than an unrelated plot."""
    static, minilm = experts
    s, m = static(DISTINCT), minilm(DISTINCT)
    cross = s @ m.T  # (static plot i, minilm plot j)
    for j in range(len(DISTINCT)):
        assert cross[j, j] > np.delete(cross[:, j], j).max() + 0.05, cross.round(2)
    p = static([PARAPHRASE])[0]
    assert p @ s[0] > max(p @ s[i] for i in range(1, len(DISTINCT)))
