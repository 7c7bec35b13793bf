"""Ingest: decode any common audio file to a stream of 16 kHz mono float32 blocks.

Files are read block by block (libsndfile through soundfile; ffmpeg for what libsndfile cannot
open) and resampled with a streaming soxr resampler, so memory stays bounded by the block size
whatever the file's length.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
_FFMPEG_BYTES_PER_SAMPLE = 4  # f32le


class AudioDecodeError(Exception):
    """The file is not audio we can decode (empty, corrupt, unknown format)."""


class NonFiniteAudioError(Exception):
    """The decoded audio holds NaN or infinite samples."""


class NotARegularFile(Exception):  # named like the failure type the listing records
    """The path is a FIFO, socket, device or folder: opening it could block or read nothing useful."""


def content_id(path: str | os.PathLike[str]) -> str:
    """Stable source id: the first 16 hex digits of the sha256 of the file's bytes.

    A content hash survives renames and moves between machines and makes a copy of a file
    recognisable as the same source.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def iter_mono_16k(path: str | os.PathLike[str], block_s: float = 30.0) -> Iterator[np.ndarray]:
    """Yield the file as consecutive 16 kHz mono float32 blocks of about `block_s` seconds."""
    yield from iter_audio(path, block_s, SAMPLE_RATE, 1)


def iter_audio(
    path: str | os.PathLike[str], block_s: float, rate: int, channels: int
) -> Iterator[np.ndarray]:
    """Yield the file at `rate` Hz as float32 blocks of about `block_s` seconds: 1-D for one channel
    (channels averaged), else (frames, channels) (a mono file repeated, extra channels dropped, as
    demucs converts)."""
    path = Path(path)
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        raise NotARegularFile(f"{path} is not a regular file")
    if status.st_size == 0:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError as libsndfile_error:
        yield from _checked(_iter_ffmpeg(path, block_s, rate, channels, libsndfile_error))
        return
    yield from _checked(_iter_soundfile(path, info, block_s, rate, channels))


def _checked(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for block in blocks:
        if not np.isfinite(block).all():
            bad = int(np.size(block) - np.count_nonzero(np.isfinite(block)))
            raise NonFiniteAudioError(f"{bad} NaN or infinite samples in the decoded audio")
        yield block


def _convert_channels(block: np.ndarray, channels: int) -> np.ndarray:
    """(frames, file channels) → 1-D mono or (frames, channels)."""
    if channels == 1:
        return block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    if block.shape[1] == 1:
        return np.repeat(block, channels, axis=1)
    if block.shape[1] < channels:
        raise AudioDecodeError(f"{block.shape[1]} channels cannot make {channels}")
    return block[:, :channels]


def _iter_soundfile(
    path: Path, info: sf._SoundFileInfo, block_s: float, rate: int, channels: int
) -> Iterator[np.ndarray]:
    resampler = None
    if info.samplerate != rate:
        resampler = soxr.ResampleStream(info.samplerate, rate, channels, dtype="float32", quality="HQ")
    block_frames = max(1, int(block_s * info.samplerate))
    try:
        for block in sf.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True):
            converted = _convert_channels(block, channels)
            if resampler is None:
                yield np.ascontiguousarray(converted)
            else:
                out = resampler.resample_chunk(converted)
                if out.size:
                    yield out
        if resampler is not None:
            empty = np.zeros(0 if channels == 1 else (0, channels), dtype=np.float32)
            tail = resampler.resample_chunk(empty, last=True)
            if tail.size:
                yield tail
    except sf.LibsndfileError as error:
        raise AudioDecodeError(f"libsndfile could not read the file: {error}") from None


def _iter_ffmpeg(
    path: Path, block_s: float, rate: int, channels: int, libsndfile_error: Exception
) -> Iterator[np.ndarray]:
    """Decode formats libsndfile does not know (m4a, aac, opus in webm ...) through ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioDecodeError(f"libsndfile: {libsndfile_error}; ffmpeg is not installed for other formats")
    command = [
        ffmpeg,
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-vn",
        "-f",
        "f32le",
        "-ac",
        str(channels),
        "-ar",
        str(rate),
        "-",
    ]
    frame_bytes = _FFMPEG_BYTES_PER_SAMPLE * channels
    block_bytes = int(block_s * rate) * frame_bytes
    # stderr goes to a file: a pipe could fill up and stall ffmpeg while we read stdout.
    with (
        tempfile.TemporaryFile() as stderr,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr) as proc,
    ):
        assert proc.stdout is not None
        produced = 0
        pending = b""
        try:
            while chunk := proc.stdout.read(block_bytes):
                chunk = pending + chunk
                usable = len(chunk) - len(chunk) % frame_bytes
                pending = chunk[usable:]
                if usable:
                    produced += usable
                    samples = np.frombuffer(chunk[:usable], dtype="<f4").copy()
                    yield samples if channels == 1 else samples.reshape(-1, channels)
        except BaseException:
            proc.kill()  # the consumer stopped early or failed: do not leave ffmpeg running
            raise
        code = proc.wait()
        stderr.seek(0)
        message = stderr.read().decode(errors="replace").strip().splitlines()
        if code != 0 or produced == 0:
            detail = message[-1] if message else f"exit code {code}, no audio decoded"
            raise AudioDecodeError(
                f"not a readable audio file (libsndfile: {libsndfile_error}; ffmpeg: {detail})"
            )


def read_mono_16k(path: str | os.PathLike[str]) -> np.ndarray:
    """The whole file in memory: for short files and tests; pipelines use `iter_mono_16k`."""
    blocks = list(iter_mono_16k(path))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def encode_flac(wave: np.ndarray) -> bytes:
    """16-bit FLAC at 16 kHz, the shard's audio encoding (samples beyond +-1 are clipped)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_flac(data: bytes, start: int = 0, frames: int = -1) -> np.ndarray:
    """The samples [start, start + frames) of a shard's FLAC (all of it by default), mono float32;
    FLAC seeks, so a crop costs its own length to decode, not the segment's."""
    wave, rate = sf.read(io.BytesIO(data), frames=frames, start=start, dtype="float32")
    if rate != SAMPLE_RATE:
        raise AudioDecodeError(f"expected {SAMPLE_RATE} Hz audio, got {rate} Hz")
    return wave if wave.ndim == 1 else wave.mean(axis=1, dtype=np.float32)


def flac_frames(data: bytes) -> int:
    """How many samples a FLAC holds, read from its STREAMINFO block (the first metadata block, which
    the format requires): 36 bits at byte 21. libsndfile only where the encoder left it unknown (0)."""
    if data[:4] == b"fLaC" and len(data) >= 26:
        frames = int.from_bytes(data[21:26], "big") & 0xF_FFFF_FFFF
        if frames:
            return frames
    return sf.info(io.BytesIO(data)).frames
