"""Static word-piece embeddings distilled from all-MiniLM-L6-v2: plots by lookup and mean.

Owns the fast CPU backend of the plot-text expert (``experts.text_backend = "static"``, issue
15). MiniLM costs ~1.4 GFLOP per 60-word plot, so one CPU core embeds at most ~55 plots/s
however it is implemented (benchmarks/results/text.json, ``ceiling``). A static model trades
context for speed the way model2vec (Tulkens & van Dongen, 2024) does: every word piece of the
model's vocabulary is run through the model once, on its own (``[CLS] piece [SEP]``, the last
hidden states mean-pooled as the sentence vector is), and each row is scaled by a smooth inverse
frequency weight ``sif / (sif + p(rank))`` with ``p`` Zipf's law over the vocabulary's order
(WordPiece vocabularies list frequent pieces first), so "the" and "." weigh little next to
"vampire". A plot's vector is then the mean of its word pieces' rows, L2-normalised: a
tokenizer call and a gather, thousands of plots per second per core. The rows stay in MiniLM's
output space (model2vec's PCA step is left out: on the synthetic plots it changed neither a
probe's genre scores nor the agreement with MiniLM's similarities), so static and MiniLM vectors
of one plot can be compared by cosine (benchmarks/results/text.json).

The table is a pure function of the model's weights; :func:`static_table` distils it once per
process per set of weights (~30 s on one core for the 30,522 pieces) and keeps it in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SIF_COEFFICIENT = 1e-4  # model2vec's default
DISTIL_BATCH = 1024  # word pieces per forward pass while distilling

_TABLES: dict[str, np.ndarray] = {}  # weights digest -> table (one distillation per process)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters (names, shapes and bytes): the table's identity."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


@torch.inference_mode()
def distil(model: torch.nn.Module, tokenizer: Any, batch_size: int = DISTIL_BATCH) -> np.ndarray:
    """The static table of ``model``: float32 ``(vocabulary size, hidden size)``.

    Row ``i`` is the model's mean-pooled output for ``[CLS] piece_i [SEP]`` times
    :func:`sif_weights` ``[i]``.
    """
    vocab = tokenizer.get_vocab_size()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise ValueError("the tokenizer has no [CLS]/[SEP] pieces: not a BERT WordPiece model")
    device = next(model.parameters()).device
    pieces = torch.arange(vocab, device=device)
    rows = []
    for i in range(0, vocab, batch_size):
        chunk = pieces[i : i + batch_size]  # (B,)
        ids = torch.stack([torch.full_like(chunk, cls), chunk, torch.full_like(chunk, sep)],
                          dim=1)  # (B, 3)
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                       token_type_ids=torch.zeros_like(ids)).last_hidden_state  # (B, 3, D)
        rows.append(hidden.mean(dim=1).float().cpu())  # (B, D)
    table = torch.cat(rows).double().numpy()  # (V, D)
    return (table * sif_weights(vocab)[:, None]).astype(np.float32)


def sif_weights(vocab: int, sif: float = SIF_COEFFICIENT) -> np.ndarray:
    """``sif / (sif + p)`` per vocabulary position, ``p`` Zipf's law over the order, (V,)."""
    inverse_rank = 1.0 / np.arange(2, vocab + 2, dtype=np.float64)
    return sif / (sif + inverse_rank / inverse_rank.sum())


def static_table(model: torch.nn.Module, tokenizer: Any) -> np.ndarray:
    """:func:`distil` of ``model``, once per process per set of weights."""
    key = weights_digest(model)
    if key not in _TABLES:
        _TABLES[key] = distil(model, tokenizer)
    return _TABLES[key]


def embed_static(table: np.ndarray, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Texts → L2-normalised means of their word pieces' rows of ``table``, float32 ``(N, D)``.

    The tokenizer's truncation applies; ``[CLS]``/``[SEP]`` are not added. A text with no
    word piece gets a zero row.
    """
    out = np.zeros((len(texts), table.shape[1]), np.float32)
    if not texts:
        return out
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    ids = np.fromiter((i for e in encodings for i in e.ids), np.int64, int(lengths.sum()))
    has = lengths > 0
    if not has.any():
        return out
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[has]
    sums = np.add.reduceat(table[ids], starts, axis=0)  # (N with pieces, D)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    out[has] = sums / np.maximum(norms, 1e-12)
    return out
