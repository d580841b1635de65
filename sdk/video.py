"""Video: colorize and stylize films, streaming, temporally stable (the ``video`` extra).

Frames are decoded with PyAV (FFmpeg's libraries; no ffmpeg executable), go through the
pipeline's stages a batch at a time (prepare -> infer -> :class:`sdk.temporal.Stabilizer` ->
finish), and are encoded as they come: memory does not grow with the video's length. Decoding and
encoding run on their own threads, so the model, the decoder and the encoder overlap.

Kept from the source: every frame's timestamp (variable frame rate too), the rotation (display
matrix) and the pixel aspect ratio; audio streams are copied untouched. The output appears at its
path only when complete: it is written to a hidden ``.NAME.partial.EXT`` beside it and renamed at
the end (an interrupted or failed job leaves nothing at the final path, and removes its partial
file). An existing output is refused unless ``overwrite``.

Example:
    >>> import sdk
    >>> sdk.colorize_video("old_film.mp4", "film_colour.mp4")
    >>> p = sdk.load()
    >>> p.stylize_video("clip.mp4", "art.mp4", style="ukiyoe", options=VideoOptions(crf=20))
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sdk import stages
from sdk.errors import (BackendUnavailableError, InvalidArgumentError, InvalidVideoError, OutputExistsError,
                        OutputWriteError, install_hint)
from sdk.temporal import Stabilizer, TemporalParams

INSTALL = install_hint("video")

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".264", ".h264", ".ogv"})
"""File suffixes (lower case) taken as video by the CLI and folder jobs."""

DEFAULT_RATE = Fraction(25)
"""Frame rate assumed for streams that carry no timing (raw H.264 elementary streams)."""


def require_av():
    """The ``av`` (PyAV) module, or BackendUnavailableError naming the ``video`` extra."""
    try:
        import av
    except ImportError as e:
        raise BackendUnavailableError(f"video needs PyAV, which is not importable here ({e}); install it with {INSTALL}") from e
    return av


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s suffix is one of :data:`VIDEO_SUFFIXES`."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoOptions:
    """How a video is processed and encoded.

    Args:
        codec: the encoder (FFmpeg's name): ``libx264`` (H.264, default), ``libx265``, ``libvpx-vp9``,
            ``mpeg4``... It must suit the output container (``.mp4``, ``.mkv``, ``.webm``...).
        crf: constant rate factor of the x264 / x265 / VP9 encoders (lower is better and larger;
            18 is visually lossless for most films); ignored by encoders without one.
        preset: the x264 / x265 speed preset (``ultrafast`` ... ``veryslow``).
        pix_fmt: the encoded pixel format (``yuv420p`` plays everywhere).
        batch: frames per generator call (memory is bounded by a few batches).
        stabilize: blend each frame with the previous one along the motion
            (:mod:`sdk.temporal`); False for frame-by-frame output.
        temporal: the stabiliser's settings.
        copy_audio: copy the audio streams untouched (False: video only).
    """

    codec: str = "libx264"
    crf: int = 18
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    batch: int = 8
    stabilize: bool = True
    temporal: TemporalParams = field(default_factory=TemporalParams)
    copy_audio: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or not 1 <= self.batch <= 256:
            raise InvalidArgumentError(f"VideoOptions.batch is {self.batch!r}; expected an integer in 1..256")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 63:
            raise InvalidArgumentError(f"VideoOptions.crf is {self.crf!r}; expected an integer in 0..63 (18: visually lossless)")
        for name in ("codec", "preset", "pix_fmt"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidArgumentError(f"VideoOptions.{name} is {getattr(self, name)!r}; expected a non-empty string")


@dataclass
class VideoSummary:
    """What a video job did.

    Attributes:
        source, output: the paths.
        frames: frames written. seconds: wall time. fps: frames per second end to end.
        audio_streams: audio streams copied. cuts: scene cuts the stabiliser reset at.
        skipped_existing: the output existed and ``overwrite`` was off (nothing done).
    """

    source: str
    output: str
    frames: int = 0
    seconds: float = 0.0
    audio_streams: int = 0
    cuts: int = 0
    skipped_existing: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 2), "audio_streams": self.audio_streams, "cuts": self.cuts,
                "skipped_existing": self.skipped_existing}


def frames(pipeline, source: Iterable[Any], task: str = "colorize", params: stages.Params | None = None,
           options: VideoOptions = VideoOptions(), stabilizer: Stabilizer | None = None) -> Iterator[Any]:
    """Process a sequence of frames in order, a batch at a time: the iterator form for callers
    who bring their own decoder.

    Args:
        pipeline: a :class:`sdk.Pipeline`.
        source: frames in display order, anything :mod:`sdk.images` accepts (RGB or grey uint8
            arrays are the cheapest); each result comes back in its frame's type.
        task: ``"colorize"`` or ``"stylize"``.
        params: style, strength, saturation, fusion (:class:`sdk.stages.Params`).
        options: ``batch``, ``stabilize`` and ``temporal`` apply.
        stabilizer: continue an existing stabiliser's state (None: a new one if ``options.stabilize``).

    Yields:
        The processed frames, in order.

    Raises:
        InvalidArgumentError, UnknownStyleError: bad options (before any frame is read).
        InvalidImageError: a frame cannot be read.

    Example:
        >>> for out in frames(sdk.load(), my_decoder(), "colorize"):
        ...     my_encoder.write(out)
    """
    resolved = stages.check_options(task, params or stages.Params(), pipeline.manifest)
    stab = stabilizer if stabilizer is not None else (Stabilizer(options.temporal) if options.stabilize else None)
    batch: list[Any] = []
    for frame in source:
        batch.append(frame)
        if len(batch) == options.batch:
            yield from _run_batch(pipeline, batch, resolved, stab)
            batch = []
    if batch:
        yield from _run_batch(pipeline, batch, resolved, stab)


def _run_batch(pipeline, batch: list[Any], options: stages.ResolvedOptions, stab: Stabilizer | None) -> list[Any]:
    jobs = [stages.prepare(f, options, f"frame {i}", pipeline.max_pixels) for i, f in enumerate(batch)]
    outs = stages.infer(pipeline.runner, jobs)
    if stab is not None:
        outs = [stab(job.luma, out, options.task) for job, out in zip(jobs, outs)]
    return [stages.finish(job, out, pipeline.workers) for job, out in zip(jobs, outs)]


_END = object()


class _Worker(threading.Thread):
    """A thread whose exception is re-raised by :meth:`check` in the caller."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn, self.error = target, None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # re-raised in the main thread
            self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _partial_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.stem}.partial{dst.suffix}")


def _open_input(av, src: Path):
    if not src.exists():
        raise InvalidVideoError(f"{src} does not exist; expected a video file")
    if not src.is_file():
        raise InvalidVideoError(f"{src} is not a regular file; expected a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    try:
        container = av.open(str(src), "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise InvalidVideoError(f"{src} is not a video FFmpeg can read ({str(e)[:200]}); "
                                "expected a video file such as MP4, MKV, MOV or WebM") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise InvalidVideoError(f"{src} has no video stream (streams: {', '.join(kinds)}); expected a file with a video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise InvalidVideoError(f"{src}: its video stream's codec is not one this FFmpeg build can decode")
    return container, stream


def process(pipeline, src: str | os.PathLike[str], dst: str | os.PathLike[str], task: str = "colorize",
            params: stages.Params | None = None, options: VideoOptions = VideoOptions(), overwrite: bool = False,
            progress: Callable[[int, int | None], None] | None = None) -> VideoSummary:
    """Colorize or stylize the video ``src`` into ``dst`` (the engine of :func:`sdk.colorize_video`).

    Args:
        pipeline: a :class:`sdk.Pipeline`.
        src: the video file.
        dst: the output file; its suffix picks the container (``.mp4``, ``.mkv``, ``.mov``, ``.webm``).
        task, params: as :meth:`sdk.Pipeline.process`.
        options: encoder and stabiliser settings (:class:`VideoOptions`).
        overwrite: replace an existing ``dst`` (never ``src``).
        progress: called after each written frame with (frames done, frames in the video or None
            when the container does not say).

    Returns:
        A :class:`VideoSummary`.

    Raises:
        BackendUnavailableError: PyAV or OpenCV missing (the ``video`` extra).
        InvalidVideoError: ``src`` missing, not a video, no video stream, undecodable.
        InvalidArgumentError: bad options, or a codec the output container cannot hold.
        OutputExistsError: ``dst`` exists (without ``overwrite``) or is ``src``.
        OutputWriteError: ``dst`` cannot be written.
    """
    av = require_av()
    resolved = stages.check_options(task, params or stages.Params(), pipeline.manifest)
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputExistsError(f"the output {dst} is the input; choose another output path")
    if dst.exists() and not overwrite:
        return VideoSummary(str(src), str(dst), skipped_existing=True)
    if dst.is_dir():
        raise OutputWriteError(f"the output {dst} is a folder; expected a file path such as {dst / (src.stem + '.mp4')}")
    if not dst.parent.is_dir():
        raise OutputWriteError(f"the output folder {dst.parent} does not exist; create it first")
    stab = Stabilizer(options.temporal) if options.stabilize else None
    container, vin = _open_input(av, src)
    tmp = _partial_path(dst)
    t0 = time.perf_counter()
    summary = VideoSummary(str(src), str(dst))
    try:
        try:
            out = av.open(str(tmp), "w")
        except (av.error.FFmpegError, ValueError) as e:
            raise OutputWriteError(f"cannot write {dst} ({str(e)[:200]}); expected a writable path whose suffix "
                                   "names a container (.mp4, .mkv, .mov, .webm)") from None
        try:
            summary.frames, summary.audio_streams = _transcode(av, pipeline, container, vin, out, resolved, options, stab, progress)
        finally:
            out.close()
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    summary.seconds = time.perf_counter() - t0
    summary.cuts = stab.cuts if stab is not None else 0
    return summary


def _add_video_stream(av, out, vin, options: VideoOptions, rate: Fraction, first_frame):
    try:
        vout = out.add_stream(options.codec, rate=rate)
    except (av.error.FFmpegError, ValueError, KeyError) as e:
        suffix = Path(out.name).suffix or "this output"
        raise InvalidArgumentError(f"codec {options.codec!r} cannot be written to {suffix} ({str(e)[:160]}); expected an FFmpeg encoder "
                                   "the container takes: libx264 / libx265 for .mp4 / .mov / .mkv, libvpx-vp9 for .webm "
                                   "(.mkv takes almost any)") from None
    vout.width, vout.height = first_frame.width, first_frame.height
    vout.pix_fmt = options.pix_fmt
    tb = vin.time_base if vin.time_base else Fraction(1, 1) / rate
    vout.time_base = tb
    vout.codec_context.time_base = tb  # the encoder keeps the source's timestamps as they are (variable frame rate)
    opts = {}
    if options.codec in ("libx264", "libx265"):
        opts = {"crf": str(options.crf), "preset": options.preset}
    elif options.codec.startswith("libvpx"):
        opts = {"crf": str(options.crf), "b": "0"}
    vout.codec_context.options = opts
    sar = vin.sample_aspect_ratio
    if sar and sar != 1:
        vout.codec_context.sample_aspect_ratio = sar
    if first_frame.rotation:
        vout.set_display_rotation(first_frame.rotation)
    return vout


def _transcode(av, pipeline, container, vin, out, resolved: stages.ResolvedOptions, options: VideoOptions, stab: Stabilizer | None,
               progress) -> tuple[int, int]:
    """Decode (thread) -> stages -> encode (thread); returns (frames written, audio streams)."""
    vin.thread_type = "AUTO"
    audio_in = [s for s in container.streams.audio] if options.copy_audio else []
    audio_out = {}
    for s in audio_in:
        try:
            audio_out[s.index] = out.add_stream_from_template(s)
        except (av.error.FFmpegError, ValueError) as e:
            raise InvalidArgumentError(f"the audio stream {s.index} ({s.codec_context.name}) cannot be copied into {Path(out.name).suffix} "
                                       f"({str(e)[:120]}); choose an .mkv output, or drop audio (copy_audio=False / --no-audio)") from None
    rate = Fraction(vin.average_rate) if vin.average_rate else (Fraction(vin.guessed_rate) if vin.guessed_rate else DEFAULT_RATE)
    total = vin.frames or None
    decoded: queue.Queue = queue.Queue(maxsize=2 * options.batch)
    encoded: queue.Queue = queue.Queue(maxsize=2 * options.batch)
    stop = threading.Event()

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for packet in container.demux(vin, *audio_in):
                if stop.is_set():
                    return
                if packet.stream.type == "audio":
                    if packet.dts is not None and not put(encoded, ("audio", packet)):
                        return
                    continue
                for frame in packet.decode():
                    if not put(decoded, frame):
                        return
        except av.error.FFmpegError as e:
            raise InvalidVideoError(f"{container.name}: the video cannot be decoded past frame {n_in[0]} "
                                    f"({str(e)[:200]}); the file is damaged or truncated: copy or export it again") from None
        finally:
            put(decoded, _END)

    n_in = [0]
    written = [0]
    state: dict[str, Any] = {}
    pending: list = []

    def encode() -> None:
        while True:
            item = encoded.get()
            if item is _END:
                break
            kind, payload = item
            if kind == "audio":
                payload.stream = audio_out[payload.stream.index]
                if "vout" in state:
                    out.mux(payload)
                else:  # every stream must exist before the first packet is written (the header)
                    pending.append(payload)
                continue
            rgb, like = payload
            if "vout" not in state:
                state["vout"] = _add_video_stream(av, out, vin, options, rate, like)
                for pkt in pending:
                    out.mux(pkt)
                pending.clear()
            vout = state["vout"]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(format=options.pix_fmt, dst_colorspace=like.colorspace or None)
            frame.pts, frame.time_base = like.pts, like.time_base
            if frame.pts is None:
                frame.pts = int(written[0] / rate / vout.time_base)
            for pkt in vout.encode(frame):
                out.mux(pkt)
            written[0] += 1
            if progress is not None:
                progress(written[0], total)
        if "vout" in state:
            for pkt in state["vout"].encode(None):
                out.mux(pkt)

    dec = _Worker(decode, "chromaforge-video-decode")
    enc = _Worker(encode, "chromaforge-video-encode")
    dec.start()
    enc.start()
    try:
        batch: list = []
        done = False
        while not done:
            item = decoded.get()
            if item is _END:
                done = True
            else:
                batch.append(item)
                n_in[0] += 1
            if batch and (done or len(batch) == options.batch):
                arrays = [f.to_ndarray(format="rgb24") for f in batch]
                results = _run_batch(pipeline, arrays, resolved, stab)
                for f, rgb in zip(batch, results):
                    if not put(encoded, ("video", (rgb, f))):
                        break
                    enc.check()
                batch = []
            dec.check()
        put(encoded, _END)
        enc.join()
        enc.check()
        dec.join()
        dec.check()
    except BaseException:
        stop.set()
        try:
            encoded.put_nowait(_END)
        except queue.Full:
            pass
        dec.join(timeout=5)
        enc.join(timeout=5)
        raise
    if written[0] == 0:
        raise InvalidVideoError(f"{container.name}: no frame could be decoded from its video stream")
    return written[0], len(audio_out)


def colorize_video(src: str | os.PathLike[str], dst: str | os.PathLike[str], saturation: float = 1.0,
                   options: VideoOptions = VideoOptions(), overwrite: bool = False, pipeline=None,
                   progress: Callable[[int, int | None], None] | None = None) -> VideoSummary:
    """Colorize a video file (see :func:`process`); the default model unless ``pipeline`` is given.

    Example:
        >>> sdk.colorize_video("old_film.mp4", "film_colour.mp4").fps
    """
    from sdk import _pipeline

    p = pipeline or _pipeline()
    return process(p, src, dst, "colorize", stages.Params(saturation=saturation), options, overwrite, progress)


def stylize_video(src: str | os.PathLike[str], dst: str | os.PathLike[str], style: stages.StyleSpec = "ukiyoe",
                  strength: float = 1.0, options: VideoOptions = VideoOptions(), overwrite: bool = False, pipeline=None,
                  progress: Callable[[int, int | None], None] | None = None) -> VideoSummary:
    """Stylize a video file (see :func:`process`); the default model unless ``pipeline`` is given.

    Example:
        >>> sdk.stylize_video("clip.mp4", "art.mp4", style="ukiyoe")
    """
    from sdk import _pipeline

    p = pipeline or _pipeline()
    return process(p, src, dst, "stylize", stages.Params(style, strength), options, overwrite, progress)


__all__ = ["VIDEO_SUFFIXES", "VideoOptions", "VideoSummary", "colorize_video", "stylize_video", "frames", "process",
           "is_video"]
