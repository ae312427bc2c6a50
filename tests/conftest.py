"""Shared fixtures: small synthetic trailers with known hard cuts, written with PyAV.

Each shot is a flat/gradient background in its own random colours with a square moving across
it; cuts are hard, so the true shot boundaries are exact. Videos are H.264 (libx264, with
B-frames, like real trailers) plus an optional AAC tone-and-noise track. No checked-in media.
"""

from __future__ import annotations

import fractions
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from mmx.synth import write_audio_only


@dataclass(frozen=True)
class SynthVideo:
    """A generated video and its ground truth."""

    path: Path
    cuts: list[int]  # first frame of every shot but the first
    n_frames: int
    fps: int
    width: int
    height: int
    has_audio: bool


def write_video(
    path: Path,
    shot_lengths: list[int],
    *,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    audio: bool = True,
    seed: int = 0,
) -> SynthVideo:
    """Encode a video whose shots have the given lengths (frames); returns its ground truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    n_frames = int(sum(shot_lengths))
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast",
                                                                     "crf": "20"})
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        astream = None
        if audio:
            astream = container.add_stream("aac", rate=44100)
            astream.layout = "stereo"
        for length in shot_lengths:
            c0, c1, colour = rng.uniform(0, 255, (3, 3))
            angle = rng.uniform(0, 2 * np.pi)
            ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
            ramp = ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-6))[..., None]
            if rng.uniform() < 0.3:  # some shots are flat
                ramp = np.zeros_like(ramp)
            background = c0 * (1 - ramp) + c1 * ramp  # (H, W, 3)
            size = height // 4
            x0, y0 = rng.uniform(0, width - size), rng.uniform(0, height - size)
            vx, vy = rng.uniform(-3, 3, 2)
            for i in range(length):
                img = background.copy()
                x = int(np.clip(x0 + vx * i, 0, width - size))
                y = int(np.clip(y0 + vy * i, 0, height - size))
                img[y : y + size, x : x + size] = colour
                frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                for packet in vstream.encode(frame):
                    container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            rate = 44100
            total = int(n_frames / fps * rate)
            t = np.arange(total) / rate
            wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(total)
            wave = np.stack([wave, wave]).astype(np.float32)  # (2, samples)
            for start in range(0, total, 1024):
                chunk = np.ascontiguousarray(wave[:, start : start + 1024])
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate = rate
                aframe.pts = start
                aframe.time_base = fractions.Fraction(1, rate)
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    cuts = np.cumsum(shot_lengths)[:-1].astype(int).tolist()
    return SynthVideo(path, cuts, n_frames, fps, width, height, audio)


def _lengths(seed: int, n: int, low: int = 14, high: int = 56) -> list[int]:
    return np.random.default_rng(seed).integers(low, high, n).tolist()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def synth_trailer(media_dir: Path) -> SynthVideo:
    """14 shots, 320x180 at 24 fps, with audio, under a name with spaces and unicode."""
    return write_video(media_dir / "bande annonce – été № 1.mp4", _lengths(1, 14), seed=1)


@pytest.fixture(scope="session")
def silent_trailer(media_dir: Path) -> SynthVideo:
    """12 shots, no audio stream."""
    return write_video(media_dir / "silent.mp4", _lengths(2, 12), audio=False, seed=2)


@pytest.fixture(scope="session")
def short_video(media_dir: Path) -> SynthVideo:
    """Only 4 shots: excluded by the minimum-shots rule."""
    return write_video(media_dir / "short.mp4", _lengths(3, 4), seed=3)


@pytest.fixture(scope="session")
def bad_files(media_dir: Path, synth_trailer: SynthVideo) -> dict[str, Path]:
    """Inputs that must fail: empty, random bytes, truncated mp4, text, audio only."""
    root = media_dir / "bad"
    root.mkdir()
    files = {
        "empty": root / "empty.mp4",
        "random": root / "random.mp4",
        "truncated": root / "truncated.mp4",
        "text": root / "notes.txt",
    }
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(np.random.default_rng(0).bytes(50_000))
    data = synth_trailer.path.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["text"].write_text("not a video at all\n" * 100)
    audio_only = root / "audio_only.m4a"
    write_audio_only(audio_only)
    files["audio_only"] = audio_only
    return files


# --- Ray and the synthetic archive ----------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start their own Ray cluster run last, after the shared local Ray is gone."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session, bound to 127.0.0.1, always shut down."""
    import ray

    ray.init(
        address="local",  # always a new cluster, never one someone else started
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic archive (mmx.synth) plus a byte-identical copy under a unicode name
    with spaces (a duplicate) and a zero-byte file."""
    import shutil

    from mmx.synth import generate_archive

    root = tmp_path_factory.mktemp("archive")
    generate_archive(str(root), n=32, seed=7)
    videos = root / "videos"
    shutil.copy(videos / "trailer_0003.mp4", videos / "zz copy of trailer ü.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def small_archive(synth_archive: Path):
    """``small_archive(dst, n, extra=("broken_0000",))``: a copy of the first ``n`` trailers
    of ``synth_archive`` plus the ``extra`` files named (by stem) and its labels, under ``dst``:
    an archive one test may add to or rewrite."""
    import shutil

    def make(dst: Path, n: int = 10, extra: tuple[str, ...] = ("broken_0000",)) -> Path:
        videos = synth_archive / "videos"
        (dst / "videos").mkdir(parents=True)
        keep = sorted(videos.glob("trailer_*.mp4"))[:n] + [videos / f"{e}.mp4" for e in extra]
        for p in keep:
            shutil.copy(p, dst / "videos" / p.name)
        shutil.copy(synth_archive / "labels.csv", dst / "labels.csv")
        return dst

    return make


def _job():
    """jobs/index_archive.py as a module (it is a script, not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "jobs" / "index_archive.py"
    spec = importlib.util.spec_from_file_location("index_archive", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def index_job():
    """``jobs/index_archive.py`` loaded as a module: call ``index_job.main(argv)``."""
    return _job()


@pytest.fixture(scope="session")
def run(ray_session, synth_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the whole job (tiny profile) over the synthetic archive; its out dir."""
    out = tmp_path_factory.mktemp("out")
    code = _job().main(
        ["--archive", str(synth_archive), "--out", str(out), "--profile", "tiny",
         "--train.coarse_epochs=4"]
    )
    assert code == 0
    return out


# --------------------------------------------------------------------------- S3 (moto)

S3_BUCKET = "mmx-test"  # the bucket the s3_endpoint fixture creates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clear_fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto in server mode on 127.0.0.1, and the AWS chain (env vars) pointed at it."""
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(k, raising=False)
        _clear_fs_cache()
        try:
            import boto3

            boto3.client("s3").create_bucket(Bucket=S3_BUCKET)
            yield endpoint
        finally:
            _clear_fs_cache()
            server.stop()


@pytest.fixture(params=["local", "s3"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh output root on a local disk or on the moto S3."""
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_endpoint")
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:10]}/out"


@pytest.fixture(scope="module")
def s3_ray(s3_endpoint: str, ray_session):
    """The session's local Ray, with workers that see the moto S3 of ``s3_endpoint``: a local
    Ray's workers inherit the env of the process that started it, so a Ray started before the
    env was set is started again, the way ``ray_session`` does."""
    ray = ray_session

    @ray.remote(num_cpus=0)
    def endpoint() -> str | None:
        import os

        return os.environ.get("AWS_ENDPOINT_URL")

    if ray.get(endpoint.remote()) != s3_endpoint:
        ray.shutdown()
        ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1",
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
        assert ray.get(endpoint.remote()) == s3_endpoint
    return ray


# --------------------------------------------------------------------------- headless Chromium
ARTIFACTS = Path(__file__).resolve().parents[1] / ".mmx" / "test-artifacts"
REPORT_SECTION = re.compile(r'<section id="([^"]+)">(.*?)</section>', re.DOTALL)


@pytest.fixture(scope="session")
def browser_check():
    """``browser_check(page, png_name) -> body data attributes``: open the HTML report
    ``page`` in headless Chromium, screenshot it to ``.mmx/test-artifacts/<png_name>``, and
    check that every section has content, no image is broken and neither the page nor the
    console reported an error. Skips without chromium (fails when MMX_REQUIRE_CHROMIUM=1)."""
    from mmx.report import SECTIONS

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("MMX_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not installed (MMX_REQUIRE_CHROMIUM=1): "
                        "apt-get install -y chromium")
        pytest.skip("chromium is not installed (set MMX_REQUIRE_CHROMIUM=1 to fail instead)")

    def check(page: Path, png_name: str) -> dict[str, str]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / png_name
        profile = tempfile.mkdtemp(prefix="mmx-chromium-")
        common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--disable-dev-shm-usage", "--no-first-run", "--enable-logging=stderr",
                  "--v=0", "--virtual-time-budget=5000", f"--user-data-dir={profile}"]
        url = Path(page).resolve().as_uri()
        try:
            dump = subprocess.run([*common, "--dump-dom", url], check=False, capture_output=True,
                                  text=True, timeout=180)
            assert dump.returncode == 0, dump.stderr[-2000:]
            shot = subprocess.run([*common, f"--screenshot={screenshot}",
                                   "--window-size=1280,5200", url], check=False,
                                  capture_output=True,
                                  text=True, timeout=180)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
        print(f"report screenshot: {screenshot}")
        dom = dump.stdout
        body = re.search(r"<body([^>]*)>", dom).group(1)
        attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body))
        assert attrs.get("loaded") == "1", f"the page's load handler did not run: {body}"
        assert attrs["broken"] == "0", f"{attrs['broken']} broken images"
        assert attrs["errors"] == "0", "script errors on the page"
        console = [ln for ln in (dump.stderr + shot.stderr).splitlines()
                   if "CONSOLE" in ln and re.search(r"error|uncaught", ln, re.IGNORECASE)]
        assert not console, console
        sections = dict(REPORT_SECTION.findall(dom))
        assert list(sections) == list(SECTIONS)
        for key, inner in sections.items():
            assert re.search(r"<(svg|table|img|div|p)\b", inner), f"section {key} is empty"
        return attrs

    return check


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests (``pytestmark = usefixtures(...)``), restored
    after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
