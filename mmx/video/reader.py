"""Video probing and forward-only, downscaled-in-the-decoder frame reading.

Owns how a trailer's pixels are read: :func:`probe` (metadata and a first-frame check via
PyAV, with a clear :class:`~mmx.errors.TrailerError` for unreadable input) and
:func:`iter_frames`, which yields the whole video once, in order, as bounded chunks of
uint8 RGB frames. Two backends: PyAV (the default: sequential decoding, a bounded prefetch
thread) and decord (``get_batch`` over consecutive indices only, never random seeks:
dmlc/decord#208, #197), with PyAV as its fallback when decord is missing, cannot open the
file, or fails part-way (we continue from the frame where it stopped).

With PyAV, 8-bit 4:2:0 frames (nearly every trailer) are scaled plane by plane with OpenCV
(2:1 box steps, then one bilinear step) and converted to RGB at the output size
(:func:`frame_to_rgb`): about 0.2 ms for a 720p frame against 0.6-1.6 ms for FFmpeg's
scale-and-convert, which had made the scaler, not the H.264 decoder, the largest cost of
reading a clean 720p trailer at 256x144. That made PyAV ~1.5x faster than decord here (720p
and 1080p), besides its bounded memory (benchmarks/ingest.py).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import av
import cv2
import numpy as np

from mmx.errors import failed

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
SkipLoopFilter = Literal["none", "noref", "bidir", "all"]  # FFmpeg's AVDISCARD names
T = TypeVar("T")

# FFmpeg "decodes" any text file as ANSI art (tty demuxer) and single images as 1-frame videos.
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "idf", "adf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of one trailer (from the first real video stream)."""

    fps: float  # average frame rate
    n_frames: int  # from the header, else estimated as duration * fps
    width: int  # coded size of the source, not the decoded size
    height: int
    duration_s: float
    has_audio: bool
    codec: str
    exact_n_frames: bool = False  # n_frames is the container's own count (MP4/MOV), not a guess


# Y'CbCr → R'G'B' per colour matrix (Kr, Kb): BT.601 (also FFmpeg's choice for untagged video)
# and BT.709 (HD). Other matrices, and formats other than 8-bit 4:2:0, go through swscale.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
_MATRIX_OF_COLORSPACE = {1: "bt709", 2: "bt601", 5: "bt601", 6: "bt601"}  # AVColorSpace
_FAST_FORMATS = {"yuv420p": False, "yuvj420p": True}  # name -> full range


def _yuv_to_rgb_matrix(matrix: str, full_range: bool) -> np.ndarray:
    """float32 ``(3, 4)`` affine map from (Y, Cb, Cr) uint8 to (R, G, B) for ``cv2.transform``."""
    kr, kb = _KR_KB[matrix]
    kg = 1.0 - kr - kb
    ys, cs, y0 = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    m = np.array([
        [ys, 0.0, 2 * (1 - kr) * cs],
        [ys, -2 * kb * (1 - kb) / kg * cs, -2 * kr * (1 - kr) / kg * cs],
        [ys, 2 * (1 - kb) * cs, 0.0],
    ])  # (3, 3) acting on (Y - y0, Cb - 128, Cr - 128)
    offset = -m @ np.array([y0, 128.0, 128.0])
    return np.concatenate([m, offset[:, None]], axis=1).astype(np.float32)


_MATRICES = {(m, full): _yuv_to_rgb_matrix(m, full) for m in _KR_KB for full in (False, True)}


def _plane(p: av.video.plane.VideoPlane) -> np.ndarray:
    """A frame's plane as a uint8 ``(rows, cols)`` view (no copy; rows padded)."""
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def _shrink(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 plane → ``size`` (width, height), anti-aliased, in cheap steps.

    Exact 2:1 box reductions (OpenCV's vectorised special case) while the plane is at least
    twice the target, then one bilinear step of less than 2:1. Against a full-resolution area
    filter: mean error ~0.6 grey levels, 99th percentile 4; OpenCV's own area resize by a
    factor like 5 or 7.5 costs 2-6x more (0.35 ms for a 720p plane, 2 ms for 1080p).
    """
    w, h = size
    while plane.shape[1] >= 2 * w and plane.shape[0] >= 2 * h and not (
            plane.shape[0] % 2 or plane.shape[1] % 2):
        plane = cv2.resize(plane, (plane.shape[1] // 2, plane.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
    if plane.shape[:2] == (h, w):
        return plane
    return cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR)


def frame_to_rgb(frame: av.VideoFrame, width: int, height: int,
                 out: np.ndarray | None = None) -> np.ndarray:
    """One decoded frame → uint8 RGB ``(height, width, 3)`` (into ``out`` when given).

    8-bit 4:2:0 frames with a BT.601/BT.709 (or untagged) matrix: each plane is scaled on its
    own with OpenCV straight to the output size (:func:`_shrink`; the chroma thereby
    upsampled), and the planes are mapped to RGB by one affine transform with the limited or
    full range the frame declares. Anything else goes through FFmpeg's swscale (area filter).
    The two agree to about a grey level (swscale's fast integer conversion reads ~1 level dark).
    """
    full = _FAST_FORMATS.get(frame.format.name)
    matrix = _MATRIX_OF_COLORSPACE.get(frame.colorspace)
    if full is None or matrix is None:
        rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        if out is None:
            return rgb
        out[...] = rgb
        return out
    full = full or frame.color_range == 2  # AVCOL_RANGE_JPEG
    size = (width, height)
    # Chroma straight to the output size too: sharper colour edges than going through half
    # size (p99.9 error 6 grey levels against a full-resolution conversion, not ~60).
    ycc = cv2.merge([_shrink(_plane(p), size) for p in frame.planes])  # (h, w, 3) Y Cb Cr
    if out is None:
        return cv2.transform(ycc, _MATRICES[matrix, full])
    cv2.transform(ycc, _MATRICES[matrix, full], dst=out)
    return out


def _reason(err: BaseException) -> str:
    """Short text of a decoder error (PyAV messages end with the file name, drop it)."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return str(text).split(": '")[0].strip()


def _video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """First video stream that is real video (not cover art attached to an audio file)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _open(path: PathLike) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning every way of failing into ``TrailerError(failed)``."""
    p = Path(path)
    if not p.exists():
        raise failed(f"file not found: {p.name}")
    if not p.is_file():
        raise failed(f"not a regular file: {p.name}")
    if p.stat().st_size == 0:
        raise failed("empty file (0 bytes)")
    try:
        return av.open(str(p))
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        raise failed(f"unreadable or corrupt file ({_reason(err)})") from err


def probe(path: PathLike) -> VideoInfo:
    """Read the metadata of ``path`` and check that its first video frame decodes.

    Raises:
        TrailerError: status ``failed`` for a missing, empty, non-video, truncated or corrupt
            file, or one without a video stream; the reason says which.
    """
    container = _open(path)
    with container:
        stream = _video_stream(container)
        if stream is None:
            raise failed("no video stream")
        fmt = container.format.name or ""
        if fmt in TEXT_FORMATS or stream.codec_context.name in TEXT_CODECS:
            raise failed("not a video (a text file)")
        if fmt == "image2" or fmt.endswith("_pipe"):
            raise failed(f"not a video (a still image, {fmt})")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps > 0:
            raise failed("video stream has no frame rate")
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        n_frames = int(stream.frames) if stream.frames else round(duration * fps)
        if duration <= 0 and n_frames > 0:
            duration = n_frames / fps
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        codec = ctx.name if ctx.codec else "unknown"
        has_audio = len(container.streams.audio) > 0
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, ValueError) as err:
            raise failed(f"video stream does not decode ({codec}: {_reason(err)})") from err
        if first is None:
            raise failed(f"video stream has no decodable frames ({codec})")
        width, height = width or first.width, height or first.height
    return VideoInfo(
        fps=fps,
        n_frames=n_frames,
        width=width,
        height=height,
        duration_s=duration,
        has_audio=has_audio,
        codec=codec,
        exact_n_frames=bool(stream.frames),
    )


def iter_frames(
    path: PathLike,
    *,
    width: int,
    height: int,
    chunk_frames: int,
    backend: Literal["decord", "pyav"] = "decord",
    threads: int = 1,
    prefetch: int = 1,
    skip_loop_filter: SkipLoopFilter = "none",
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode ``path`` once, in order, scaled to ``width`` x ``height`` inside the decoder.

    ``skip_loop_filter`` (PyAV only): frames whose in-loop deblocking FFmpeg skips; ``"noref"``
    skips it only on frames no other frame predicts from, so no error can propagate (measured
    at 256x144: mean 0.001-0.01 grey levels, a few edge pixels up to ~20; 2-14% less
    decoding time).

    Yields:
        ``(first_index, frames)`` with ``frames`` a fresh uint8 RGB array of shape
        ``(T, height, width, 3)``, ``T <= chunk_frames``; chunks are consecutive and cover every
        decoded frame exactly once.

    Memory: with PyAV, ``prefetch + 2`` chunks at most (``prefetch`` chunks are decoded ahead
    in a background thread, 0 = no thread). decord decodes ahead on its own thread without a
    bound we can set: while the caller is busy it buffers thousands of frames (measured: about
    0.5 GB at 256x144, 1.2 GB at 512x288), so prefer ``backend="pyav"`` when memory matters.

    Raises:
        TrailerError: ``failed`` when neither decoder can read the stream.
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    done = 0  # frames already yielded
    if backend == "decord":
        reader = _open_decord(path, width, height, threads)
        if reader is not None:
            try:
                n = len(reader)
                for start in range(0, n, chunk_frames):
                    indices = list(range(start, min(n, start + chunk_frames)))
                    try:
                        # Consecutive indices: decord decodes forward, no seek (decord#208).
                        frames = reader.get_batch(indices).asnumpy()
                    except Exception as err:  # noqa: BLE001 - decord raises bare DECORDError
                        log.warning("decord failed at frame %d of %s (%s); continuing with PyAV",
                                    start, Path(path).name, _reason(err))
                        break
                    if frames.shape[1:] != (height, width, 3):
                        log.warning("decord returned %s frames; continuing with PyAV",
                                    frames.shape[1:])
                        break
                    yield start, frames
                    done = start + len(frames)
                else:
                    return
            finally:
                # Drop the reader (and its decoder buffers) as soon as the trailer is read.
                del reader
    if prefetch > 0:
        yield from _prefetched(
            lambda: _iter_pyav(path, width, height, chunk_frames, threads, skip=done,
                               skip_loop_filter=skip_loop_filter),
            prefetch,
        )
    else:
        yield from _iter_pyav(path, width, height, chunk_frames, threads, skip=done,
                              skip_loop_filter=skip_loop_filter)


def _prefetched(make: Callable[[], Generator[T, None, None]], depth: int) -> Iterator[T]:
    """Run the iterator ``make()`` in a background thread, at most ``depth`` items ahead.

    Decoding (FFmpeg releases the GIL) then overlaps with the caller's work on the previous
    chunk, while memory stays bounded: ``depth`` queued chunks plus the one being filled.
    Errors are re-raised in the caller; closing this generator stops the thread.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        source = make()
        try:
            for item in source:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer thread
            put(("error", err))
        finally:
            source.close()

    worker = threading.Thread(target=work, name="mmx-decode", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a pending put, then wait for the thread
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def _open_decord(path: PathLike, width: int, height: int, threads: int) -> object | None:
    """A decord ``VideoReader`` scaled in the decoder, or None when decord cannot open it."""
    try:
        import decord
    except ImportError:
        return None
    try:
        return decord.VideoReader(
            str(path), width=width, height=height, ctx=decord.cpu(0), num_threads=threads
        )
    except Exception as err:  # noqa: BLE001 - decord raises RuntimeError / DECORDError
        log.info("decord cannot open %s (%s); using PyAV", Path(path).name, _reason(err))
        return None


def _iter_pyav(
    path: PathLike, width: int, height: int, chunk_frames: int, threads: int, skip: int = 0,
    skip_loop_filter: SkipLoopFilter = "none",
) -> Generator[tuple[int, np.ndarray], None, None]:
    """PyAV decoding in presentation order; frames before ``skip`` are decoded and dropped."""
    container = _open(path)
    with container:
        stream = _video_stream(container)
        if stream is None:
            raise failed("no video stream")
        stream.thread_count = threads
        if skip_loop_filter != "none":  # a generic decoder option (H.264, HEVC honour it)
            stream.codec_context.options = {"skip_loop_filter": skip_loop_filter}
        buf = np.empty((chunk_frames, height, width, 3), np.uint8)
        fill = 0
        index = 0
        start = skip
        try:
            for frame in container.decode(stream):
                if index >= skip:
                    frame_to_rgb(frame, width, height, out=buf[fill])
                    fill += 1
                    if fill == chunk_frames:
                        yield start, buf
                        start += fill
                        buf = np.empty_like(buf)
                        fill = 0
                index += 1
        except (av.FFmpegError, ValueError) as err:
            of = f" of {stream.frames}" if stream.frames else ""
            raise failed(f"corrupt or truncated video: decode error at frame {index}{of} "
                         f"({_reason(err)})") from err
        if fill:
            yield start, buf[:fill].copy()
        if index == 0:
            raise failed("video stream has no decodable frames")


def read_frames_pyav(path: PathLike, indices: Sequence[int], width: int, height: int) -> np.ndarray:
    """Frames at ``indices`` (any order) by decoding sequentially with PyAV; for tests.

    Pixels are converted as :func:`iter_frames` does with PyAV (:func:`frame_to_rgb`), so the
    reference differs from decord's frames only by the scaler's rounding.

    Returns:
        uint8 RGB array of shape ``(len(indices), height, width, 3)``, in the order given.

    Raises:
        IndexError: an index is beyond the last decoded frame.
    """
    wanted = sorted({int(i) for i in indices})
    found: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise failed("no video stream")
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                found[index] = frame_to_rgb(frame, width, height)
            if wanted and index >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise IndexError(f"frames {missing[:5]} are beyond the end of {Path(path).name}")
    out = np.empty((len(indices), height, width, 3), np.uint8)
    for k, i in enumerate(indices):
        out[k] = found[int(i)]
    return out
