"""Ingest: any common audio file → 16 kHz mono float32 blocks, with real files of every format."""

from __future__ import annotations

import io
import shutil
import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from annotate.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    NonFiniteAudioError,
    content_id,
    decode_flac,
    encode_flac,
    iter_mono_16k,
    read_mono_16k,
)


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / rate)[np.argmax(spectrum)])


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_wav_decodes_to_16k_mono_float32_with_the_right_duration(tmp_path, subtype, rate):
    seconds = 1.37
    path = tmp_path / f"tone_{subtype}_{rate}.wav"
    sf.write(path, sine(440, seconds, rate), rate, subtype=subtype)
    wave = read_mono_16k(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - round(seconds * SAMPLE_RATE)) <= 3
    # The level survives resampling: the RMS of a 0.5 sine is 0.5 / sqrt(2) (edges left out).
    assert rms(wave[800:-800]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_16k_pcm16_is_passed_through_sample_exact(tmp_path):
    rng = np.random.default_rng(0)
    ints = rng.integers(-20000, 20000, size=16_001, dtype=np.int16)
    path = tmp_path / "exact.wav"
    sf.write(path, ints, SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_array_equal(read_mono_16k(path), ints.astype(np.float32) / 32768)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_a_440_hz_sine_keeps_its_frequency_after_resampling(tmp_path, rate):
    path = tmp_path / "a440.wav"
    sf.write(path, sine(440, 2.0, rate), rate, subtype="PCM_16")
    wave = read_mono_16k(path)
    assert peak_hz(wave) == pytest.approx(440, abs=1.0)


def test_stereo_is_downmixed_by_the_mean(tmp_path):
    rate = 44100
    frames = round(1.5 * rate)
    opposite = np.column_stack([np.full(frames, 0.5), np.full(frames, -0.5)]).astype(np.float32)
    sf.write(tmp_path / "cancel.wav", opposite, rate, subtype="FLOAT")
    cancelled = read_mono_16k(tmp_path / "cancel.wav")
    assert abs(cancelled.size - 1.5 * SAMPLE_RATE) <= 3
    assert np.max(np.abs(cancelled)) < 1e-4

    one_side = np.column_stack([sine(440, 1.5, rate, 0.8), np.zeros(frames, np.float32)])
    sf.write(tmp_path / "left.wav", one_side, rate, subtype="FLOAT")
    halved = read_mono_16k(tmp_path / "left.wav")
    assert rms(halved[800:-800]) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)
    assert peak_hz(halved) == pytest.approx(440, abs=1.0)


def test_six_channels_are_averaged(tmp_path):
    frames = SAMPLE_RATE  # 16 kHz: no resampler, so the mean is exact
    levels = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=np.float32)
    sf.write(tmp_path / "surround.wav", np.tile(levels, (frames, 1)), SAMPLE_RATE, subtype="FLOAT")
    wave = read_mono_16k(tmp_path / "surround.wav")
    assert wave.shape == (frames,)
    np.testing.assert_allclose(wave, 0.35, atol=1e-6)

    sf.write(tmp_path / "surround48.wav", np.tile(levels, (48_000, 1)), 48_000, subtype="PCM_24")
    resampled = read_mono_16k(tmp_path / "surround48.wav")
    assert abs(resampled.size - SAMPLE_RATE) <= 3
    np.testing.assert_allclose(resampled[400:-400], 0.35, atol=1e-3)


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix"),
    [("FLAC", "PCM_16", "flac"), ("FLAC", "PCM_24", "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", None, "mp3")],
)
def test_compressed_formats_decode_with_the_right_duration_and_pitch(tmp_path, fmt, subtype, suffix):
    rate, seconds = 44100, 2.5
    path = tmp_path / f"tone.{suffix}"
    sf.write(path, sine(440, seconds, rate), rate, format=fmt, subtype=subtype)
    wave = read_mono_16k(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - seconds * SAMPLE_RATE) <= 3
    assert peak_hz(wave) == pytest.approx(440, abs=1.0)
    assert rms(wave[4000:-4000]) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def _ffmpeg_tone(path, seconds: float, codec: str = "aac") -> None:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is missing: run `make env`")
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi",
            "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100", "-c:a", codec, str(path),
        ],
        check=True,
    )  # fmt: skip


def test_m4a_goes_through_the_ffmpeg_fallback(tmp_path):
    path = tmp_path / "tone.m4a"
    _ffmpeg_tone(path, 2.5)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))  # so the ffmpeg path is the one under test
    blocks = list(iter_mono_16k(path, block_s=0.5))
    assert all(b.dtype == np.float32 and b.ndim == 1 and b.size <= 8000 for b in blocks)
    assert len(blocks) >= 5
    wave = np.concatenate(blocks)
    # AAC codes whole 1024-sample frames: the tail may carry up to one frame (23 ms) of padding.
    assert 2.5 * SAMPLE_RATE - 3 <= wave.size <= 2.5 * SAMPLE_RATE + 1024 * SAMPLE_RATE / 44100
    assert peak_hz(wave) == pytest.approx(440, abs=1.0)


def test_empty_file_is_a_decode_error(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        read_mono_16k(path)


def test_text_named_wav_is_a_decode_error(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not audio\n" * 20)
    with pytest.raises(AudioDecodeError, match="not a readable audio file"):
        read_mono_16k(path)


def test_truncated_wav_header_is_a_decode_error(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, sine(440, 1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AudioDecodeError):
        read_mono_16k(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rate", [16000, 44100])
def test_non_finite_samples_are_rejected(tmp_path, bad, rate):
    wave = sine(440, 1.0, rate)
    wave[rate // 2] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match="NaN or infinite"):
        read_mono_16k(path)


def test_long_file_streams_in_bounded_blocks(tmp_path):
    minutes, block_s = 20, 30
    path = tmp_path / "long.wav"
    total = minutes * 60 * SAMPLE_RATE
    chunk = 60 * SAMPLE_RATE
    tone = sine(220, 60, SAMPLE_RATE, amplitude=0.25)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as out:
        for _ in range(total // chunk):
            out.write(tone)

    whole_float32 = total * 4
    tracemalloc.start()
    try:
        sizes, seen = [], 0
        for block in iter_mono_16k(path, block_s=block_s):
            assert block.dtype == np.float32
            sizes.append(block.size)
            seen += block.size
            del block
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == total
    assert len(sizes) == minutes * 60 // block_s
    assert max(sizes) <= block_s * SAMPLE_RATE
    assert peak < 0.25 * whole_float32, f"peak {peak / 1e6:.1f} MB while streaming"


def test_resampled_stream_blocks_stay_near_block_size(tmp_path):
    rate, seconds, block_s = 44100, 65, 2.0
    path = tmp_path / "resampled.wav"
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16") as out:
        for _ in range(seconds // 5):
            out.write(np.tile(sine(330, 5, rate, 0.3)[:, None], (1, 2)))
    sizes = [block.size for block in iter_mono_16k(path, block_s=block_s)]
    assert len(sizes) >= seconds / block_s
    assert max(sizes) <= block_s * SAMPLE_RATE + 1024  # the resampler may hold back / release a little
    assert abs(sum(sizes) - seconds * SAMPLE_RATE) <= 3


def test_content_id_is_a_content_hash(tmp_path):
    original = tmp_path / "a.wav"
    sf.write(original, sine(440, 0.5, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    copy = tmp_path / "elsewhere" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    ident = content_id(original)
    assert len(ident) == 16 and all(c in "0123456789abcdef" for c in ident)
    assert content_id(copy) == ident
    data = bytearray(original.read_bytes())
    data[-1] ^= 0x01
    changed = tmp_path / "changed.wav"
    changed.write_bytes(bytes(data))
    assert content_id(changed) != ident


def test_flac_round_trip_within_16_bit_quantisation():
    rng = np.random.default_rng(1)
    wave = rng.uniform(-0.99, 0.99, size=12_345).astype(np.float32)
    data = encode_flac(wave)
    assert data[:4] == b"fLaC"
    back = decode_flac(data)
    assert back.dtype == np.float32 and back.shape == wave.shape
    assert np.max(np.abs(back - wave)) <= 1 / 32768 + 1e-7
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")


def test_flac_encoding_clips_beyond_full_scale():
    wave = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5], dtype=np.float32)
    back = decode_flac(encode_flac(wave))
    np.testing.assert_allclose(back, [-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0], atol=1 / 32768)
    assert np.all(np.abs(back) <= 1.0)


def test_decode_flac_rejects_other_rates_and_downmixes_stereo():
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(100, np.float32), 44100, format="FLAC", subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match="44100"):
        decode_flac(buffer.getvalue())

    buffer = io.BytesIO()
    stereo = np.column_stack([np.full(100, 0.5), np.full(100, 0.25)]).astype(np.float32)
    sf.write(buffer, stereo, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    mono = decode_flac(buffer.getvalue())
    assert mono.shape == (100,)
    np.testing.assert_allclose(mono, 0.375, atol=1 / 32768)
