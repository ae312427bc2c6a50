"""Video probing and forward-only, downscaled-in-the-decoder frame reading.

Owns how a trailer's pixels are read: :func:`probe` (metadata and a first-frame check via
PyAV, with a clear :class:`~mmx.errors.TrailerError` for unreadable input) and
:func:`iter_frames`, which yields the whole video once, in order, as bounded chunks of
uint8 RGB frames. decord is the fast path (``get_batch`` over consecutive indices only, never
random seeks: dmlc/decord#208, #197); PyAV is the fallback when decord is missing, cannot open
the file, or fails part-way (we continue from the frame where it stopped).
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
import numpy as np

from mmx.errors import failed

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
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
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode ``path`` once, in order, scaled to ``width`` x ``height`` inside the decoder.

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
            lambda: _iter_pyav(path, width, height, chunk_frames, threads, skip=done), prefetch
        )
    else:
        yield from _iter_pyav(path, width, height, chunk_frames, threads, skip=done)


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
    path: PathLike, width: int, height: int, chunk_frames: int, threads: int, skip: int = 0
) -> Generator[tuple[int, np.ndarray], None, None]:
    """PyAV decoding in presentation order; frames before ``skip`` are decoded and dropped."""
    container = _open(path)
    with container:
        stream = _video_stream(container)
        if stream is None:
            raise failed("no video stream")
        stream.thread_count = threads
        buf = np.empty((chunk_frames, height, width, 3), np.uint8)
        fill = 0
        index = 0
        start = skip
        try:
            for frame in container.decode(stream):
                if index >= skip:
                    buf[fill] = frame.to_ndarray(width=width, height=height, format="rgb24")
                    fill += 1
                    if fill == chunk_frames:
                        yield start, buf
                        start += fill
                        buf = np.empty_like(buf)
                        fill = 0
                index += 1
        except (av.FFmpegError, ValueError) as err:
            raise failed(f"corrupt video: decode error at frame {index} ({_reason(err)})") from err
        if fill:
            yield start, buf[:fill].copy()
        if index == 0:
            raise failed("video stream has no decodable frames")


def read_frames_pyav(path: PathLike, indices: Sequence[int], width: int, height: int) -> np.ndarray:
    """Frames at ``indices`` (any order) by decoding sequentially with PyAV; for tests.

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
                found[index] = frame.to_ndarray(width=width, height=height, format="rgb24")
            if wanted and index >= wanted[-1]:
                break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise IndexError(f"frames {missing[:5]} are beyond the end of {Path(path).name}")
    out = np.empty((len(indices), height, width, 3), np.uint8)
    for k, i in enumerate(indices):
        out[k] = found[int(i)]
    return out
