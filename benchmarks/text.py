"""Text-expert benchmark: plots/s per CPU core of the all-MiniLM-L6-v2 plot expert.

    python benchmarks/text.py                      # ~2–5 min on a busy 2-core box
    python benchmarks/text.py --n 128 --out /tmp/text.json

Writes ``benchmarks/results/text.json`` (``--out``). Synthetic plots of ~60 words (seeded draws
from a film-synopsis vocabulary, 50–70 words each, 53–75 word pieces) are embedded by
:class:`mmx.experts.text.TextExpert` (tokenising, the forward pass, pooling, normalising: the
whole call) with one torch thread and the tokenizer's thread pool off
(``TOKENIZERS_PARALLELISM=false``), so the rate is per core. Each configuration runs once to
warm up, then ``--repeats`` times; the best wall-clock and CPU-time (``time.process_time``)
rates are reported (noise from other work on the machine only ever adds time; on a shared
machine CPU time is the steadier per-core figure). Configurations: fp32 at several batch sizes,
fp32 at shorter ``max_length`` (64 truncates the longest of these plots, 32 all of them), and
dynamic int8 quantisation of the linear layers (``int8=True``, per-channel weights); each
reports the cosine agreement of its vectors with fp32 at ``max_length`` 256
(``cosine_vs_fp32``: mean and min over the plots) and how well it keeps fp32's neighbourhoods
(``similarity_spearman_vs_fp32``: Spearman correlation of the pairwise cosines of all plots).
``static`` is the opt-in static backend (``experts.text_backend=static``: word-piece vectors
distilled from the model, :mod:`mmx.experts.static_text`), timed over ``--static-copies`` ×
``--n`` plots (one call of ``--n`` is too short to time); its one-off distillation per process
is ``static_distil_s``.
Target (issue 15): ≥ 200 plots/s per core; ``meets_target`` names the configurations that meet
it. ``ceiling`` bounds what any implementation of the transformer could reach on this core: the
encoder's GFLOP per plot (at these plots' word-piece counts) over the core's best GEMM rate on
the model's own matrix shapes, fp32 and int8 (``target_reachable_on_this_cpu``). The load
average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: no tokenizer threads

import numpy as np
import torch

from mmx.experts.text import TextExpert

TARGET = 200.0  # plots/s per core (issue 15)
VOCABULARY = (
    "a the young old detective mother father city town small dark secret war love family "
    "haunted house island ship space station crew killer police heist bank money escape "
    "prison journey road trip wedding school teacher student band music dream nightmare "
    "ghost vampire zombie alien planet robot future past village farm storm desert jungle "
    "mountain ocean river night summer winter revenge betrayal friendship rivalry murder "
    "mystery comedy romance scientist doctor soldier king queen kingdom dragon sword magic "
    "after when while must discovers finds learns decides tries fights races hides returns "
    "before their his her with from into against across under through one last final first"
)
WORDS = VOCABULARY.split()
CONFIGS = (  # (label, batch_size, max_length, int8, backend)
    ("fp32_b8", 8, 256, False, "minilm"),
    ("fp32_b32", 32, 256, False, "minilm"),
    ("fp32_b64", 64, 256, False, "minilm"),
    ("fp32_b32_len64", 32, 64, False, "minilm"),
    ("fp32_b32_len32", 32, 32, False, "minilm"),
    ("int8_b32", 32, 256, True, "minilm"),
    ("int8_b32_len64", 32, 64, True, "minilm"),
    ("int8_b32_len32", 32, 32, True, "minilm"),
    ("static", 32, 256, False, "static"),
)


def synthetic_plots(n: int, seed: int = 0) -> list[str]:
    """``n`` seeded pseudo-synopses of 50–70 words."""
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    return [" ".join(words[rng.integers(0, len(words), rng.integers(50, 71))]).capitalize() + "."
            for _ in range(n)]


def measure(expert: TextExpert, plots: list[str], repeats: int,
            timed: list[str] | None = None) -> dict[str, Any]:
    """Best wall and CPU rates (plots/s) over ``repeats`` timed calls on ``timed`` (default
    ``plots``) after one warm-up; the vectors of ``plots``."""
    vectors = expert(plots)  # warm-up (and the int8 copy is built here)
    timed = plots if timed is None else timed
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        expert(timed)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {
        "plots_per_s_wall": round(len(timed) / min(walls), 1),
        "plots_per_s_cpu": round(len(timed) / min(cpus), 1),
        "vectors": vectors,
    }


def similarity_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of the pairwise cosines of the rows of ``a`` and of ``b``."""
    from scipy.stats import spearmanr

    upper = np.triu_indices(len(a), 1)
    return float(spearmanr((a @ a.T)[upper], (b @ b.T)[upper])[0])


def gflop_per_plot(config: Any, tokens: list[int]) -> float:
    """GFLOP (2 × multiply-adds) of one BERT encoder forward per plot, mean over ``tokens`` (each
    plot's word pieces): per layer the Q/K/V/output projections 4·L·H², the feed-forward
    2·L·H·I and the attention scores and mix 2·L²·H. Embeddings, norms, softmax and pooling are
    left out, so it is a lower bound of the work."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per = [2 * layers * (4 * n * h * h + 2 * n * h * i + 2 * n * n * h) for n in tokens]
    return float(np.mean(per)) / 1e9


def gemm_rate(hidden: int, inner: int, int8: bool, repeats: int, rows: int = 2048) -> float:
    """GFLOP/s of one thread on the model's own largest product, ``(rows, hidden) @ (hidden,
    inner)`` (the feed-forward's first layer over a batch of tokens): fp32 ``torch.mm``, or
    the dynamically int8-quantised ``nn.Linear`` the expert runs with ``int8=True``. Best of
    ``repeats`` after a warm-up; what the hardware and kernels give at best, not the model."""
    x = torch.randn(rows, hidden)
    if int8:
        from mmx.experts.text import quantize_linear_int8

        layer = quantize_linear_int8(torch.nn.Sequential(torch.nn.Linear(hidden, inner)))
        def run() -> Any:
            return layer(x)
    else:
        w = torch.randn(hidden, inner)
        def run() -> Any:
            return x @ w
    best = float("inf")
    with torch.inference_mode():
        run()
        for _ in range(max(repeats, 3)):
            t0 = time.process_time()
            for _ in range(5):
                run()
            best = min(best, (time.process_time() - t0) / 5)
    return 2 * rows * hidden * inner / best / 1e9


def ceiling(expert: TextExpert, tokens: list[int], repeats: int) -> dict[str, Any]:
    """The most plots/s one core could give with this model: its GFLOP per plot over the
    core's best GEMM rate on the model's shapes (fp32 and int8). Above the target or not, this
    says whether a faster implementation could reach it on this CPU or only other hardware."""
    config = expert.model.config
    work = gflop_per_plot(config, tokens)
    out: dict[str, Any] = {"gflop_per_plot": round(work, 3)}
    for kind, int8 in (("fp32", False), ("int8", True)):
        rate = gemm_rate(config.hidden_size, config.intermediate_size, int8, repeats)
        out[f"gemm_gflops_{kind}"] = round(rate, 1)
        out[f"ceiling_plots_per_s_{kind}"] = round(rate / work, 1)
    out["target_reachable_on_this_cpu"] = max(
        out["ceiling_plots_per_s_fp32"], out["ceiling_plots_per_s_int8"]) >= TARGET
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="plots per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--static-copies", type=int, default=16,
                        help="the static backend is timed over this many copies of the plots")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "text.json"))
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    plots = synthetic_plots(args.n)
    load_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    expert = TextExpert(threads=1)
    load_s = time.perf_counter() - t0
    tokens = [sum(e.attention_mask) for e in expert.tokenizer.encode_batch(plots)]  # unpadded
    bound = ceiling(expert, tokens, args.repeats)
    print("ceiling", bound, flush=True)
    reference = None
    distil_s = None
    results: dict[str, Any] = {}
    for label, batch_size, max_length, int8, backend in CONFIGS:
        expert.batch_size, expert.int8, expert._runner = batch_size, int8, None
        expert.backend = backend
        expert.tokenizer.enable_truncation(max_length=max_length)
        timed = None
        if backend == "static":
            c0 = time.process_time()
            expert(plots[:1])  # distils the table (once per process)
            distil_s = round(time.process_time() - c0, 1)
            timed = plots * args.static_copies
        got = measure(expert, plots, args.repeats, timed)
        vectors = got.pop("vectors")
        if reference is None:  # the first configuration is fp32 at the model's max length
            reference = vectors
        cos = (vectors * reference).sum(axis=1)  # both L2-normalised
        results[label] = {"batch_size": batch_size, "max_length": max_length, "int8": int8,
                          "backend": backend, **got,
                          "cosine_vs_fp32": {"mean": round(float(cos.mean()), 5),
                                             "min": round(float(cos.min()), 5)},
                          "similarity_spearman_vs_fp32": round(
                              similarity_spearman(vectors, reference), 4)}
        print(label, results[label], flush=True)

    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": 1, "load_avg_at_start": load_start,
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "n": args.n,
        "repeats": args.repeats,
        "words_per_plot": [50, 70],
        "word_pieces_per_plot": {"mean": round(float(np.mean(tokens)), 1),
                                 "min": int(np.min(tokens)), "max": int(np.max(tokens))},
        "model_load_s": round(load_s, 1),
        "static_distil_s": distil_s,
        "static_timed_plots": args.n * args.static_copies,
        "target_plots_per_s_per_core": TARGET,
        "ceiling": bound,
        "configs": results,
        "meets_target": [k for k, v in results.items()
                         if max(v["plots_per_s_cpu"], v["plots_per_s_wall"]) >= TARGET],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "configs"}, indent=2))
    return out


if __name__ == "__main__":
    main()
