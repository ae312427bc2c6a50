"""MMXNetwork: shapes, masking, gradients, vectorised gating vs a loop, window maths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmx.config import build_config
from mmx.model import AUDIO, CollaborativeGating, MMXNetwork, NetVLAD, sequence_windows
from mmx.train.data import TrailerFeatures, collate

DIMS = {"appearance": 12, "scene": 7, "motion": 5}
AUDIO_DIM = 6
N_GENRES = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP spinning on a busy 2-core box costs 40x
    yield
    torch.set_num_threads(before)


def _trailer(rng: np.random.Generator, i: int, c: int, *, audio: bool = True) -> TrailerFeatures:
    return TrailerFeatures(
        trailer_id=f"t{i}",
        features={k: rng.normal(size=(c, d)).astype(np.float32) for k, d in DIMS.items()},
        audio=rng.normal(size=(c, 4, AUDIO_DIM)).astype(np.float32),
        audio_frames=rng.integers(1, 5, size=c),
        has_audio=audio,
        labels=(rng.random(N_GENRES) < 0.5).astype(np.float32),
    )


def _model(**overrides) -> MMXNetwork:
    cfg = dataclasses.replace(build_config("tiny").model, **overrides)
    torch.manual_seed(0)
    return MMXNetwork(DIMS, AUDIO_DIM, N_GENRES, cfg).eval()


def _batch(items):
    return collate(items, DIMS, AUDIO_DIM, N_GENRES)


@pytest.mark.parametrize(
    "overrides", [{}, {"aggregation": "sum"}, {"gating": False}], ids=["concat", "sum", "no-gating"]
)
def test_shapes(overrides):
    rng = np.random.default_rng(0)
    model = _model(**overrides)
    cfg = model.cfg
    batch = _batch([_trailer(rng, i, c) for i, c in enumerate([5, 12, 2])])
    out = model(batch)
    assert out["embedding"].shape == (3, cfg.bottleneck)
    assert out["logits"].shape == (3, N_GENRES)
    shots = model.encode_shots(batch)
    assert shots.shape == (3, 12, cfg.shot_dim)
    norms = shots.norm(dim=-1)
    assert torch.allclose(norms[batch["clip_mask"]], torch.ones(1), atol=1e-5)  # L2-normalised
    assert torch.all(norms[~batch["clip_mask"]] == 0)  # padding stays empty
    assert model.project(out["embedding"]).shape == (3, cfg.proj_head_dim)
    assert model.expert_names == (*DIMS, AUDIO)


def test_padding_does_not_change_output():
    rng = np.random.default_rng(1)
    model = _model()
    short, long = _trailer(rng, 0, 4), _trailer(rng, 1, 15)
    alone = model(_batch([short]))["embedding"]
    batch = _batch([short, long])
    for x in batch["experts"].values():  # garbage in padded slots must not leak in
        x[0, 4:] = 1e3
    batch["audio"][0, 4:] = -1e3
    batch["audio"][batch["audio_mask"].logical_not()] = 7.0  # and none from padded frames
    padded = model(batch)["embedding"][:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_unavailable_expert_is_ignored():
    rng = np.random.default_rng(2)
    model = _model()
    item = _trailer(rng, 0, 6, audio=False)
    base = model(_batch([item]))["embedding"]
    item.audio = item.audio * 100 + 3  # has_audio=False: the values must not matter
    assert torch.allclose(base, model(_batch([item]))["embedding"], atol=1e-6)
    del item.features["motion"]  # an absent expert differs from a present one ...
    without = model(_batch([item]))["embedding"]
    assert not torch.allclose(base, without, atol=1e-4)
    batch = _batch([item])
    batch["experts"]["motion"] += 5.0  # ... but its (masked) values do not matter
    assert torch.allclose(without, model(batch)["embedding"], atol=1e-6)


def test_each_valid_clip_encoded_once():
    rng = np.random.default_rng(3)
    model = _model()
    batch = _batch([_trailer(rng, i, c) for i, c in enumerate([3, 9, 20])])
    seen = []
    model.proj["appearance"].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    model(batch)
    assert seen == [3 + 9 + 20]


@pytest.mark.parametrize("gating", [True, False])
def test_gradient_reaches_every_expert(gating):
    rng = np.random.default_rng(4)
    model = _model(gating=gating).train()
    batch = _batch([_trailer(rng, i, c) for i, c in enumerate([6, 10])])
    model(batch)["logits"].sum().backward()
    for name in model.expert_names:
        grad = model.proj[name].weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.netvlad.centroids.grad.abs().sum() > 0


def test_gating_matches_double_loop_reference():
    torch.manual_seed(0)
    n, e, p, h = 5, 4, 8, 6
    gating = CollaborativeGating(p, h)
    psi = torch.randn(n, e, p)
    avail = torch.rand(n, e) > 0.3
    avail[0] = False  # no expert available
    avail[1] = torch.tensor([True, False, False, False])  # a lone expert
    w1 = torch.cat([gating.g_a.weight, gating.g_b.weight], dim=1)  # first layer of g on [ψ_e; ψ_f]
    ref = torch.zeros(n, e, p)
    with torch.no_grad():
        for i in range(n):
            for ei in range(e):
                total = torch.zeros(h)
                for fi in range(e):
                    if fi == ei or not avail[i, fi]:
                        continue
                    pair = torch.cat([psi[i, ei], psi[i, fi]])
                    hidden = torch.relu(w1 @ pair + gating.g_a.bias)
                    total += gating.g_out(hidden)
                ref[i, ei] = psi[i, ei] * torch.sigmoid(gating.h(total))
        out = gating(psi, avail)
    assert torch.allclose(out, ref, atol=1e-5)


def test_windows_spread_evenly():
    win = sequence_windows(torch.tensor([20]), 4, 3)
    assert win.shape == (1, 4, 3)
    assert win[0, :, 0].tolist() == [0, 6, 11, 17]  # starts over [0, C − n] = [0, 17], rounded
    assert win[0, -1].tolist() == [17, 18, 19]
    assert torch.equal(win[0] - win[0, :, :1], torch.arange(3).expand(4, 3))  # consecutive


def test_windows_few_clips_repeat_and_clamp():
    win = sequence_windows(torch.tensor([1, 2, 3, 5]), 4, 3)
    assert win[0].unique().tolist() == [0]
    assert win[1].tolist() == [[0, 1, 1]] * 4
    assert win[2].tolist() == [[0, 1, 2]] * 4
    assert win[3, :, 0].tolist() == [0, 1, 1, 2]
    single = sequence_windows(torch.tensor([11]), 1, 3)
    assert single[0, 0].tolist() == [4, 5, 6]  # one window is centred


def test_windows_halves_stay_inside():
    n_clips = torch.tensor([1, 4, 7, 30])
    half = n_clips // 2
    first = sequence_windows(n_clips, 5, 3, lo=0, hi=half)
    second = sequence_windows(n_clips, 5, 3, lo=half, hi=n_clips)
    for b, c in enumerate(n_clips.tolist()):
        h = c // 2
        assert first[b].max() <= max(h - 1, 0) and first[b].min() >= 0
        assert second[b].min() >= h and second[b].max() <= c - 1
    assert first[3, 0].tolist() == [0, 1, 2] and first[3, -1].tolist() == [12, 13, 14]
    assert second[3, 0].tolist() == [15, 16, 17] and second[3, -1].tolist() == [27, 28, 29]


def test_netvlad_masks_and_normalises():
    torch.manual_seed(0)
    vlad = NetVLAD(6, 3)
    x = torch.randn(4, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]).bool()
    out = vlad(x, mask)
    assert out.shape == (4, 18)
    assert torch.allclose(out.norm(dim=-1), torch.tensor([1.0, 1.0, 0.0, 1.0]), atol=1e-5)
    x2 = x.clone()
    x2[~mask] = 100.0
    assert torch.allclose(out, vlad(x2, mask), atol=1e-6)


def test_pooled_skip_moments_and_view():
    """The skip reads the mean and std of each standardised expert over the windows' clips."""
    rng = np.random.default_rng(7)
    model = _model(aggregation="sum")
    item = _trailer(rng, 0, 10)
    batch = _batch([item])
    cover = torch.zeros(1, 10, dtype=torch.bool)
    cover[0, :5] = True
    pooled = model.pool_experts(batch, cover)
    x = item.features["appearance"][:5]  # standardisation is the identity before training
    assert pooled.shape == (1, 2 * (sum(DIMS.values()) + AUDIO_DIM))
    np.testing.assert_allclose(pooled[0, :12].numpy(), x.mean(0), atol=1e-5)
    np.testing.assert_allclose(pooled[0, 12:24].numpy(), x.std(0), atol=1e-3)
    frames = np.concatenate([item.audio[i, : item.audio_frames[i]] for i in range(5)])
    np.testing.assert_allclose(pooled[0, -2 * AUDIO_DIM : -AUDIO_DIM].numpy(), frames.mean(0),
                               atol=1e-5)
    # a contrastive view over the first half does not see the second half's clips at all
    first = model.windows(batch["n_clips"], model.cfg.n_seqs, model.cfg.shots_per_seq, lo=0, hi=5)
    view = model.embed(batch, first)
    batch["experts"]["scene"][0, 5:] += 10.0
    batch["audio"][0, 5:] -= 10.0
    assert torch.allclose(view, model.embed(batch, first), atol=1e-6)
    assert not torch.allclose(model(batch)["embedding"], model(_batch([item]))["embedding"])


def test_without_pooled_skip_is_the_papers_network():
    model = _model(pooled_skip=False)
    assert model.pool_skip is None
    args = model.init_args()
    del args["model"]["pooled_skip"]  # a checkpoint saved before the skip existed
    old = MMXNetwork.from_init_args(args)
    assert old.pool_skip is None
    old.load_state_dict(model.state_dict())  # strict: the same parameters
