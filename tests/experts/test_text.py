"""The plot-text expert: the packaged all-MiniLM-L6-v2, offline, mean-pooled and normalised."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmx.config import ConfigError, ExpertsConfig
from mmx.experts.text import MAX_LENGTH, TextExpert, mean_pool

ROOT = Path(__file__).resolve().parents[2]

PLOTS = [
    "A retired hitman comes back for one last job in Paris.",
    "An old assassin returns to carry out a final contract in France.",
    "Two children build a treehouse and bake cookies with their grandmother.",
]

# Run in a fresh interpreter with every socket connect refused and no HF offline switch set:
# building and running the expert must not try the network (nor need a writable cache).
OFFLINE_SCRIPT = """
import json, socket, sys
def refuse(self, *args, **kwargs):
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = lambda *a, **k: refuse(None)
from mmx.config import ConfigError, ExpertsConfig
from mmx.experts.text import TextExpert
vectors = TextExpert(threads=1)(json.loads(sys.argv[1]))
print(json.dumps(vectors.tolist()))
"""


@pytest.fixture(scope="module")
def expert() -> TextExpert:
    cfg = ExpertsConfig(text_threads=1, text_batch_size=2)  # settings come from the config
    built = TextExpert(cfg)
    assert (built.threads, built.batch_size, built.max_length, built.int8) == (1, 2, 256, False)
    return built


def test_loads_offline_and_repeats(expert: TextExpert, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(PLOTS)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    offline = np.asarray(json.loads(run.stdout.strip().splitlines()[-1]), dtype=np.float32)
    assert not any(tmp_path.iterdir()), "the expert wrote to HOME / the cache"
    here = expert(PLOTS)
    np.testing.assert_allclose(offline, here, atol=1e-6)  # another process, same vectors
    np.testing.assert_array_equal(expert(PLOTS), here)  # same process, twice: bitwise


def test_shape_dtype_normalised_and_semantic(expert: TextExpert) -> None:
    v = expert(PLOTS)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3  # paraphrase vs unrelated


def test_batch_order_and_truncation(expert: TextExpert) -> None:
    """Length sorting and batching change nothing; text past 256 word pieces is ignored."""
    long = " ".join(["storm"] * 300)
    longer = long + " and then a completely different ending about kittens on a beach"
    together = expert([PLOTS[2], long, PLOTS[0], longer, PLOTS[1]])
    alone = np.concatenate([expert([p]) for p in (PLOTS[2], long, PLOTS[0], longer, PLOTS[1])])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together[1], together[3], atol=1e-6)  # truncated at MAX_LENGTH
    assert len(expert.tokenizer.encode(longer).ids) == MAX_LENGTH


def test_empty_plots_are_masked(expert: TextExpert) -> None:
    vectors, has = expert.embed([PLOTS[0], "", None, "   ", PLOTS[1], "\x00\u200b"])
    np.testing.assert_array_equal(has, [True, False, False, False, True, False])
    assert vectors.shape == (6, 384) and not vectors[~has].any()
    np.testing.assert_allclose(vectors[has], expert([PLOTS[0], PLOTS[1]]), atol=1e-6)
    none, mask = expert.embed([None, ""])
    assert none.shape == (2, 384) and not mask.any()
    assert expert([]).shape == (0, 384)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask).numpy(), [[2.0, 3.0]])


def test_user_weights_round_trip(expert: TextExpert, tmp_path: Path) -> None:
    """A user state dict (here the packaged weights, one layer changed) replaces the model's."""
    original = {k: v.clone() for k, v in expert.model.state_dict().items()}
    state = {f"bert.{k}": v.clone() for k, v in original.items()}
    state["bert.encoder.layer.5.intermediate.dense.weight"] *= -1.0
    torch.save(state, tmp_path / "changed.pt")
    torch.save(original, tmp_path / "original.pt")
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pt")
    before = expert(PLOTS[:1])
    try:
        expert.load_weights(str(tmp_path / "changed.pt"))
        assert not np.allclose(before, expert(PLOTS[:1]), atol=1e-3)
        with pytest.raises(ValueError, match="not an all-MiniLM-L6-v2"):
            expert.load_weights(str(tmp_path / "bad.pt"))
    finally:
        expert.load_weights(str(tmp_path / "original.pt"))
    np.testing.assert_array_equal(expert(PLOTS[:1]), before)


def test_config_checks_the_text_settings() -> None:
    with pytest.raises(ConfigError, match="text_max_length"):
        ExpertsConfig(text_max_length=512)


def test_int8_copy_agrees_with_fp32(expert: TextExpert) -> None:
    """The int8 option runs a quantised copy; the fp32 model (and its vectors) stay as they were."""
    fp32 = expert(PLOTS)
    expert.int8, expert._runner = True, None
    try:
        int8 = expert(PLOTS)
    finally:
        expert.int8, expert._runner = False, None
    cos = (int8 * fp32).sum(axis=1)
    assert cos.min() > 0.9 and not np.array_equal(int8, fp32)
    np.testing.assert_array_equal(expert(PLOTS), fp32)
