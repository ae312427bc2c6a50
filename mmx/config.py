"""Run configuration: frozen dataclasses per component, composed into one :class:`RunConfig`.

Owns every size, threshold and resource ask of the pipeline. Defaults live in code; a profile
(``demo`` or ``paper``) is applied on top, then a YAML file, then ``section.key=value``
overrides. Overrides are type-checked and unknown keys are rejected, so a typo in a nightly
job fails at start-up instead of silently running with a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_WORKDIR = Path(".mmx")


@dataclass(frozen=True)
class VideoConfig:
    """Decoding: every trailer is decoded once, downscaled in the decoder, read forward-only."""

    width: int = 256  # decoded frame size fed to shot detection and the CPU experts
    height: int = 144
    chunk_frames: int = 256  # frames held in memory at once per trailer
    # pyav: plane-wise OpenCV scaling made it ~30% faster than decord here (720p and 1080p, see
    # benchmarks/ingest.py), frame-exact, and memory stays flat with its bounded prefetch;
    # decord's read-ahead is not bounded (≈+0.5 GB at 256x144 on long inputs).
    backend: Literal["decord", "pyav"] = "pyav"
    max_duration_s: float = 1800.0  # longer inputs are excluded (a trailer is minutes long)
    # Bounds on what one input may cost: larger files are excluded before they are read; a
    # declared frame rate outside [min_fps, max_fps] fails the file (a broken header would
    # otherwise set the frame budget); a decode running longer than decode_timeout_s stops and
    # fails the trailer for this run only (transient: the machine may just have been busy).
    max_bytes: int = 8 << 30
    min_fps: float = 1.0
    max_fps: float = 300.0
    decode_timeout_s: float = 1800.0
    audio_rate: int = 16000
    decode_threads: int = 1  # decoder threads per trailer (Ray runs trailers side by side)
    prefetch_chunks: int = 1  # PyAV: chunks decoded ahead on a background thread (0 = none)
    # PyAV: skip in-loop deblocking on frames nothing predicts from ("noref": no error can
    # propagate; ~0.01 grey levels at 256x144, 2-14% less decoding), "none" = bit-exact.
    skip_loop_filter: Literal["none", "noref", "bidir", "all"] = "noref"

    def __post_init__(self) -> None:
        _check(self.width >= 32 and self.height >= 32, "video.width/height must be >= 32")
        _check(self.chunk_frames >= 8, "video.chunk_frames must be >= 8")
        _check(self.max_bytes > 0, "video.max_bytes must be > 0")
        _check(0 < self.min_fps <= self.max_fps, "video.min_fps must be in (0, max_fps]")
        _check(self.decode_timeout_s > 0, "video.decode_timeout_s must be > 0")


@dataclass(frozen=True)
class ShotsConfig:
    """Shot detection on our decoded frames and clip rules.

    ``hybrid`` (default, chosen by ``benchmarks/shots.py``): hard cuts with flash suppression
    and gradual transitions (dissolves, fades) on 32x18 frames (``mmx.shots.transitions``);
    ``adaptive`` / ``content``: PySceneDetect's detectors (hard cuts); ``transnetv2``: the
    learned detector (~100 frames/s on one CPU core).
    """

    detector: Literal["hybrid", "adaptive", "content", "transnetv2"] = "hybrid"
    # frames are downscaled further for detection (speed, PITFALLS); half the decoded width is
    # an exact 2:1 area reduction (a non-integer one cost 3x more than the detection itself)
    detect_width: int = 128  # adaptive / content
    adaptive_threshold: float = 3.0
    content_threshold: float = 27.0
    min_shot_frames: int = 6  # minimum shot length in frames
    drop_edge_frames: int = 1  # frames dropped at each end of a shot (fuzzy boundaries)
    min_shots: int = 10  # trailers with fewer kept shots are excluded
    # ... and those with more shots than this (not a trailer, or cuts at every frame): the
    # frames kept per shot for the appearance CNN would otherwise grow without bound
    max_clips: int = 2000
    transnet_threshold: float = 0.5
    # hybrid: thresholds on mean absolute RGB differences (0..255) of signal_width-px frames
    signal_width: int = 32
    cut_threshold: float = 10.0  # a hard cut's frame difference, at least
    cut_isolation: float = 2.5  # ... and at least this multiple of its neighbours' (not motion)
    flash_similarity: float = 0.3  # frames across a spike this close (x spike): a flash
    gradual_lag: int = 8  # frames between the ends of a gradual-transition window
    gradual_threshold: float = 18.0  # ends' difference at equal brightness, at least
    gradual_linearity: float = 0.2  # middle frame's distance from the ends' mean (x ends')

    def __post_init__(self) -> None:
        _check(self.min_shots >= 1, "shots.min_shots must be >= 1")
        _check(self.max_clips >= self.min_shots, "shots.max_clips must be >= shots.min_shots")
        _check(self.drop_edge_frames >= 0, "shots.drop_edge_frames must be >= 0")
        _check(self.signal_width >= 8, "shots.signal_width must be >= 8")
        _check(self.gradual_lag >= 2, "shots.gradual_lag must be >= 2")


# the per-title experts over the metadata sidecar (on by default: see ExpertsConfig.names)
TITLE_EXPERTS = ("text", "poster", "metadata")

# ExpertsConfig settings that only the per-title experts read: they change neither a trailer's
# features nor the features cache key (mmx.pipeline.ingest_key), only the title vectors' key
TITLE_EXPERT_SETTINGS = ("text_backend", "text_batch_size", "text_max_length", "text_threads",
                         "text_int8", "poster_fit")


@dataclass(frozen=True)
class ExpertsConfig:
    """Which experts run, how many frames each sees, and optional user weights per expert."""

    # the run's experts, by registered name (mmx.experts.registry): one line turns one on.
    # The per-title experts (TITLE_EXPERTS: text = the plot, poster, metadata = year and
    # runtime) run only when the archive has a metadata sidecar (<archive>/metadata.csv|
    # parquet); without one the run is the trailer-only run (same features, cache key,
    # model). Fused late (ModelConfig.title_fusion) they raise the withheld genre scores on
    # each of 3 seeds of the quality benchmark (benchmarks/results/quality.json,
    # with_metadata); drop them from this list to ignore a sidecar.
    names: tuple[str, ...] = ("appearance", "scene", "motion", "audio", *TITLE_EXPERTS)
    appearance_frames: int = 1  # frames per shot seen by the CNN (evenly spaced)
    appearance_size: int = 224
    motion_frames: int = 6  # frames per shot used for optical flow
    max_audio_frames: int = 8  # 0.96 s audio frames kept per shot (evenly sampled)
    scene_stride: int = 4  # scene descriptor on every k-th decoded frame (averaged per shot)
    motion_stride: int = 2  # optical flow on frame pairs (t, t+1) for every k-th frame t
    appearance_candidates: int = 16  # frames held per open shot to pick the CNN's frames from
    # per-title experts (mmx/experts/text.py, poster.py): the text backend (minilm: the
    # all-MiniLM-L6-v2 transformer, ~50 plots/s per CPU core; static: word-piece vectors
    # distilled from it, thousands per core, mmx/experts/static_text.py), plots per forward
    # pass, word pieces kept (<= 256, the model's), torch threads while embedding (0 = leave
    # the process's), int8 dynamic quantisation of MiniLM's linear layers; the poster's fit
    text_backend: Literal["minilm", "static"] = "minilm"
    text_batch_size: int = 32
    text_max_length: int = 256
    text_threads: int = 0
    text_int8: bool = False
    poster_fit: Literal["pad", "crop"] = "pad"
    weights: dict[str, str] = field(default_factory=dict)  # expert name -> local path or s3://

    def __post_init__(self) -> None:
        _check(len(self.names) >= 1, "experts.names must name at least one expert")
        _check(self.appearance_frames >= 1, "experts.appearance_frames must be >= 1")
        _check(self.motion_frames >= 2, "experts.motion_frames must be >= 2")
        _check(1 <= self.text_max_length <= 256, "experts.text_max_length must be in [1, 256]")
        _check(self.text_batch_size >= 1, "experts.text_batch_size must be >= 1")
        _check(self.text_threads >= 0, "experts.text_threads must be >= 0 (0 = leave as is)")
        _check(not (self.text_int8 and self.text_backend == "static"),
               "experts.text_int8 quantises MiniLM: it does not apply to text_backend=static")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the MMX network (DESIGN §1). The paper profile uses the paper's widths."""

    proj_dim: int = 768  # every expert is projected to this width
    gate_hidden: int = 256  # hidden width of the gating MLPs g and h
    shot_dim: int = 128  # L2-normalised shot vector
    shots_per_seq: int = 9  # n
    n_seqs: int = 40  # S
    seq_dim: int = 256  # output of MLP j
    # sum: permutation-invariant over windows, measured better than the paper's default concat
    # at every archive size we tried (benchmarks/quality.py); concat stays selectable
    aggregation: Literal["concat", "sum"] = "sum"
    bottleneck: int = 2048  # trailer embedding (output of MLP k)
    k_hidden: int = 2048
    head_hidden: int = 1024  # MLP l
    proj_head_hidden: int = 512  # projection head m
    proj_head_dim: int = 128  # projection head n
    netvlad_clusters: int = 8
    gating: bool = True  # False: naive concatenation without collaborative gating
    # mean and std of each standardised expert input over the trailer's clips → bottleneck,
    # added to MLP k's output (see mmx.model.network); False: the paper's network
    pooled_skip: bool = True
    # per-title experts (plot, poster, metadata): "late" = kept out of the trailer embedding,
    # one linear genre head each, fused with the trailer's logits by weights fitted on the
    # validation split (mmx.model.network step 6; measured better than "gated" = with the shot
    # experts in collaborative gating, benchmarks/quality.py --with-metadata)
    title_fusion: Literal["late", "gated"] = "late"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _check(self.shots_per_seq >= 1 and self.n_seqs >= 1, "model sizes must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Both training phases and the Ray Train worker layout."""

    num_workers: int = 2
    use_gpu: bool = False
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with GPUs, else gloo
    cpus_per_worker: float = 1.0
    seed: int = 0
    batch_size: int = 32  # global batch, split across workers
    coarse_epochs: int = 200
    coarse_lr: float = 3e-5
    patience: int = 20  # early stopping on validation AU(PRC) weighted
    contrastive_epochs: int = 50
    contrastive_lr: float = 1e-4
    warmup_epochs: int = 10
    temperature: float = 0.2  # NT-Xent; the paper's 0.5 gave a blurrier fine embedding here
    threshold: float = 0.3
    weight_decay: float = 0.0
    # windows a trailer is seen through in the coarse phase: "even" (as at inference) or
    # "random" positions drawn at every step (augmentation)
    coarse_windows: Literal["even", "random"] = "even"
    # the contrastive phase's two views: "halves" (first/second half of the clips, the paper's)
    # or "random" (two independent draws of window positions over all clips)
    contrastive_views: Literal["halves", "random"] = "halves"
    # modality dropout: each expert of a trailer is masked out with this probability in a
    # training step (at least one kept); in the contrastive phase each view draws its own
    expert_dropout: float = 0.3
    # weight of the genre BCE kept in the contrastive phase (0 = the paper's: NT-Xent only,
    # the genre head frozen); > 0 keeps the fine embedding and its head genre-aware
    contrastive_genre_weight: float = 0.0
    # weight of the cross-modal term of the contrastive phase when the model has late-fused
    # title experts (mmx.model.network step 7): each trailer's projection must pick its own
    # title's plot, poster and facts out of the batch's; 0 = off (no effect without title
    # experts). 1 raises the sub-genre ARI on each of 3 seeds of the quality benchmark
    # (benchmarks/results/quality.json, with_metadata.variants)
    contrastive_title_weight: float = 1.0
    # labelled trailers (train and validation split each) the late fusion of the title experts
    # is fitted on (mmx.train.loop.fit_title_fusion): beyond this a seeded random subset, so the
    # gathered float64 rows stay ~0.7 GB per worker at 50k titles × ~1.7k title dims
    title_fusion_max_rows: int = 50_000
    # per-genre weights of the genre BCE: "pos_weight" scales each genre's positive term by its
    # negatives/positives (DESIGN §1, the paper's); "class" scales both terms of a genre by its
    # inverse frequency, normalised to mean 1 (the class-weighted BCE of the multimodal genre
    # work, issue 15); "none": plain BCE
    genre_loss_weights: Literal["pos_weight", "class", "none"] = "pos_weight"
    # labelled trailers are stratified (multi-label, rarest genre first) into train/val/test in
    # these proportions; test >= 0.2 so that its figures mean something (DESIGN §1)
    split_fractions: tuple[float, ...] = (0.6, 0.2, 0.2)
    # fewer labelled ok trailers than this: no genre head is trained; the run publishes a
    # self-supervised (contrastive-only) embedding, sub-genres, neighbours and the index
    min_labelled: int = 20
    # --mode incremental trains anew (and re-clusters) when the model is this many days old, or
    # when the ok trailers grew by this fraction (0.2 = 20 %) since the run that trained it;
    # None = rule off (then only --retrain does). See mmx/policy.py.
    retrain_every_days: float | None = None
    retrain_growth: float | None = None
    # --mode incremental whose labels name a genre the reused model does not know (new,
    # renamed, a typo): True trains anew; False stops the run before decoding with a message
    # naming the genres (then --retrain, or fix the labels)
    retrain_on_new_genres: bool = True

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, "train.num_workers must be >= 1")
        _check(self.batch_size >= 2, "train.batch_size must be >= 2")
        _check(len(self.split_fractions) == 3 and all(f > 0 for f in self.split_fractions),
               "train.split_fractions must be three positive numbers (train, val, test)")
        _check(self.min_labelled >= 2, "train.min_labelled must be >= 2")
        _check(self.title_fusion_max_rows >= 100, "train.title_fusion_max_rows must be >= 100")
        _check(self.retrain_every_days is None or self.retrain_every_days > 0,
               "train.retrain_every_days must be > 0 (or null)")
        _check(self.retrain_growth is None or self.retrain_growth > 0,
               "train.retrain_growth must be > 0 (or null)")


@dataclass(frozen=True)
class IndexConfig:
    """Sub-genre clustering, the sharded FAISS index and the neighbours table."""

    # sub-genres: 0 = auto (Ward's hierarchy cut at the finest level whose silhouette is within
    # subgenre_tolerance of the best cut, see mmx/index/hierarchy.py); k > 0 = k-means with k
    n_subgenres: int = 0
    subgenre_tolerance: float = 0.01
    min_subgenres: int = 2
    max_subgenres: int = 0  # 0 = half the clustered sample, at most 400
    subgenre_sample: int = 4000  # trailers the hierarchy is built on (the rest join centroids)
    n_shards: int = 2
    neighbours: int = 10
    exact_below: int = 50_000  # exact (flat) index below this many vectors, IVF above
    seed: int = 0
    k_range: tuple[int, ...] = ()  # with n_subgenres > 0: pick k among these by silhouette
    nprobe: int = 16  # IVF lists visited per query (ignored by the exact index)
    train_sample: int = 100_000  # max vectors (seeded sample) to train the IVF quantizer
    # IVF list encoding: flat = float32 (4·D B/vector), sq8 = 8-bit scalar quantizer (D B/vector,
    # ~1.8× faster scans, ~0.5 pt recall); auto = sq8 once the float32 vectors exceed 2 GiB
    ivf_encoding: Literal["auto", "flat", "sq8"] = "auto"
    top_genres: int = 3  # genres listed per sub-genre (by lift vs the archive)
    exemplars: int = 5  # trailers listed per sub-genre (nearest the centroid)
    top_concepts: int = 5  # ImageNet concepts listed per sub-genre (0 = skip naming them)
    concept_min_share: float = 0.2  # a listed concept is seen in at least this share of members
    # a re-clustered sub-genre keeps a previous id when their shared members' Jaccard reaches
    # this (Hungarian assignment, mmx/index/stable.py); below it the cluster gets a fresh id
    subgenre_min_jaccard: float = 0.3
    recall_queries: int = 256  # seeded sample of vectors the index's recall@10 is measured on
    recall_target: float = 0.95  # metrics.json reports the smallest nprobe reaching this recall
    recall_batch: int = 16384  # vectors per step of the exact search it is measured against

    def __post_init__(self) -> None:
        _check(0 < self.subgenre_min_jaccard <= 1, "index.subgenre_min_jaccard must be in (0, 1]")
        _check(self.recall_queries >= 1, "index.recall_queries must be >= 1")
        _check(self.recall_batch >= 1, "index.recall_batch must be >= 1")
        _check(0 < self.recall_target <= 1, "index.recall_target must be in (0, 1]")


@dataclass(frozen=True)
class ResourcesConfig:
    """Ray resource asks per stage: 2 CPU workers here, GPU nodes in production."""

    address: str | None = None  # None: connect to RAY_ADDRESS or start a local Ray
    decode_cpus: float = 1.0  # per decode+shots task
    decode_concurrency: int = 2
    appearance_pool_min: int = 1
    appearance_pool_max: int = 1
    appearance_trailers: int = 4  # trailers per batch into the CNN actor pool
    appearance_batch: int = 64  # frames per CNN forward pass
    appearance_cpus: float = 1.0
    appearance_gpus: float = 0.0
    embed_batch: int = 64  # trailers per batch into the embedding actors
    embed_pool: int = 1  # embedding actors (model replicas)
    embed_gpus: float = 0.0
    # per-title experts over the metadata sidecar (plot text, poster CNN): titles per batch into
    # their actor pool (each actor loads the models once), actors, GPUs per actor
    title_batch: int = 64
    title_pool: int = 1
    title_cpus: float = 1.0
    title_gpus: float = 0.0
    # trailers per Parquet file of a run's features store and embeddings (many per object)
    store_rows_per_file: int = 256
    # new files whose bytes add up to at most this are hashed by the driver (threads): a Ray
    # task per file costs seconds of scheduling for a handful of small files
    hash_in_driver_bytes: int = 64 * 2**20
    max_retries: int = 2  # retries of the index-shard tasks (Ray Data stages use its defaults)
    # Decodes of one trailer whose worker process died (segfault, OOM kill, lost node) before
    # the trailer is recorded ``failed`` instead of decoded again (attempt ledger, see
    # mmx/stages/ingest.py); Ray Data itself retries such tasks without limit.
    decode_attempts: int = 3
    # Testing only: decodes of input files whose name matches this fnmatch pattern kill their
    # own worker with SIGSEGV, as a crashing decoder would ("" = off).
    debug_crash_decode: str = ""
    progress_every_s: float = 30.0  # a progress line (done/total, rate, ETA) of long stages

    def __post_init__(self) -> None:
        _check(self.decode_attempts >= 1, "resources.decode_attempts must be >= 1")
        _check(self.progress_every_s > 0, "resources.progress_every_s must be > 0")


@dataclass(frozen=True)
class RunConfig:
    """The whole run: one object, saved beside every checkpoint and snapshot."""

    profile: str = "demo"
    archive: str = ""  # directory or s3:// prefix of video files; "" = embedded demo
    labels: str = ""  # CSV or Parquet; "" = <archive>/labels.csv when present
    out: str = ""  # output root; "" = .mmx/out
    mode: Literal["full", "incremental"] = "full"
    demo_trailers: int = 48
    keep_snapshots: int = 7  # published snapshots kept (older ones pruned; 0 = keep all)
    # ... and none is pruned before it has been superseded this long: a reader that opened it
    # through LATEST just before a publish can finish (table formats keep a week too).
    snapshot_grace_days: float = 7.0
    # One writer per output root: a run holds the lease <out>/work/LEASE (mmx.lease) and
    # heartbeats it every third of this; a lease not renewed for this long (a crashed run) is
    # taken over by the next run. Keep it far above the clock skew between machines.
    lease_ttl_s: float = 600.0
    # How long a run waits for another run's lease before it gives up (0 = give up at once).
    lease_wait_s: float = 0.0
    # Hash every file's bytes again, even those whose location, size and version tag (S3 ETag,
    # local mtime) are unchanged since the latest snapshot (whose fingerprints are reused).
    rehash: bool = False
    # Incremental runs that reuse the model: embed every trailer again, rebuild every index
    # shard and every neighbour list (default: only what changed; the tables are the same).
    recompute: bool = False
    # Decode again the trailers whose cached result is ``failed`` (a decoder bug since fixed, a
    # file that crashed its worker): their cached rows are dropped first. Transient failures
    # (storage, memory: reason ``transient: …``) are never cached and need no flag.
    retry_failed: bool = False
    # The job exits with code 8 (after publishing) when more than this fraction of its inputs
    # ended ``failed`` (1.0: never), so a scheduler notices a night that read mostly nothing.
    max_failed_fraction: float = 1.0
    video: VideoConfig = field(default_factory=VideoConfig)
    shots: ShotsConfig = field(default_factory=ShotsConfig)
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        _check(self.lease_ttl_s > 0, "lease_ttl_s must be > 0")
        _check(self.lease_wait_s >= 0, "lease_wait_s must be >= 0")
        _check(0.0 <= self.max_failed_fraction <= 1.0, "max_failed_fraction must be in [0, 1]")
        _check(self.snapshot_grace_days >= 0, "snapshot_grace_days must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-safe)."""
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Profiles are partial overrides on top of the code defaults.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # The paper's sizes (Fish et al., ICIP 2021).
    "paper": {},
    # Small enough for the demo archive on 2 CPU cores in minutes.
    "demo": {
        "model": {
            "proj_dim": 64,
            "gate_hidden": 64,
            "shot_dim": 32,
            "shots_per_seq": 3,
            "n_seqs": 6,
            "seq_dim": 64,
            "bottleneck": 128,
            "k_hidden": 128,
            "head_hidden": 64,
            "proj_head_hidden": 64,
            "proj_head_dim": 32,
            "netvlad_clusters": 4,
            "dropout": 0.3,
        },
        "train": {
            "batch_size": 16,
            "coarse_epochs": 200,
            "coarse_lr": 3e-4,
            "patience": 60,
            "contrastive_epochs": 30,
            "contrastive_lr": 1e-3,
            "warmup_epochs": 3,
        },
        "index": {"n_shards": 2, "neighbours": 5},
    },
    # Tiny: for tests over a handful of trailers.
    "tiny": {
        "model": {
            "proj_dim": 32,
            "gate_hidden": 32,
            "shot_dim": 16,
            "shots_per_seq": 3,
            "n_seqs": 4,
            "seq_dim": 32,
            "bottleneck": 64,
            "k_hidden": 64,
            "head_hidden": 32,
            "proj_head_hidden": 32,
            "proj_head_dim": 16,
            "netvlad_clusters": 2,
        },
        "train": {
            "batch_size": 8,
            "coarse_epochs": 3,
            "coarse_lr": 1e-3,
            "patience": 3,
            "contrastive_epochs": 2,
            "contrastive_lr": 3e-4,
            "warmup_epochs": 1,
        },
        "index": {"n_shards": 2, "neighbours": 3},
    },
}


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check (and gently coerce, e.g. int → float, list → tuple) ``value`` against ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, arg, value)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(_coerce(name, args[0], v) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {str(k): _coerce(name, args[1], v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                value = int(value.replace("_", ""))
            except ValueError as err:
                raise ConfigError(f"{name}: expected an integer, got {value!r}") from err
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError as err:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from err
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported config type {tp!r}")


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """Return ``obj`` (a config dataclass) with nested ``updates`` applied, type-checked."""
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {name!r}; known: {sorted(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping of {sorted(f.name for f in fields(current))}")
            changes[key] = _apply(current, value, prefix=f"{name}.")
        else:
            changes[key] = _coerce(name, hints[key], value)
    return replace(obj, **changes)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.num_workers=4", "model.aggregation=sum"]`` → nested dict (values as YAML)."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        value = yaml.safe_load(raw) if raw else ""
        node = nested
        parts = key.strip().lstrip("-").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def parse_args_with_overrides(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` with ``parser``, leaving ``--section.key=value`` overrides aside.

    Anything else the parser does not know ends the program with argparse's usage error.
    """
    args, extra = parser.parse_known_args(argv)
    # --section.key=value, or --key=value for a top-level setting (e.g. --lease_ttl_s=60)
    top = {f.name for f in fields(RunConfig) if f.default is not dataclasses.MISSING}
    bad = [a for a in extra if not (a.startswith("--") and "=" in a and (
        "." in a.split("=")[0] or a.split("=")[0].removeprefix("--") in top))]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    return args, extra


def build_config(
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults → profile → YAML file → overrides; every step type-checked.

    The profile can come from the argument, from the YAML's ``profile`` key, or defaults to
    ``demo``.
    """
    file_values: dict[str, Any] = {}
    if config_file:
        text = Path(config_file).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: expected a mapping at the top level")
        file_values = loaded
    overrides = dict(overrides or {})
    name = profile or overrides.pop("profile", None) or file_values.get("profile") or "demo"
    overrides.pop("profile", None)
    file_values.pop("profile", None)
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
    cfg = _apply(RunConfig(profile=name), PROFILES[name])
    cfg = _apply(cfg, file_values)
    return _apply(cfg, overrides)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a saved config (e.g. ``config.json`` beside a checkpoint)."""
    values = dict(values)
    return _apply(RunConfig(profile=values.pop("profile", "demo")), values)
