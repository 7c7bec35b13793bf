"""Long sources stream through a stage group in chunks, and a source always yields the rows it
announces, even when cutting breaks halfway."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

import annotate.cut
from pipeline.config import RunConfig
from pipeline.stages import StageChain, build_stage_specs
from tests.conftest import SENTENCES, speak


def _write_speech(path, minutes: float) -> str:
    speech, rate = sf.read(speak(path.with_suffix(".wav"), SENTENCES, "-v", "en-us+m3"), dtype="float32")
    unit = np.concatenate([speech, np.zeros(int(1.5 * rate), dtype=np.float32)])
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for _ in range(int(minutes * 60 * rate / unit.size)):
            out.write(unit)
    return str(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """Speech with pauses as 16 kHz FLAC: a 3-minute and a 12-minute source."""
    folder = tmp_path_factory.mktemp("long")
    return {"short": _write_speech(folder / "short.flac", 3), "long": _write_speech(folder / "long.flac", 12)}


@pytest.fixture(scope="module")
def long_source(sources) -> str:
    return sources["long"]


def _stream_peak(chain: StageChain, path: str) -> tuple[int, list[list[dict]]]:
    tracemalloc.start()
    chunks = []
    for chunk in chain.stream([{"input_path": path, "status": "ok"}], chunk_rows=4):
        for row in chunk:
            row["audio"] = None  # a consumer that writes the chunk away keeps none of its audio
        chunks.append(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, chunks


def test_a_long_source_streams_in_small_chunks_with_bounded_memory(sources):
    chain = StageChain(build_stage_specs(RunConfig()))
    short_peak, _ = _stream_peak(chain, sources["short"])
    long_peak, chunks = _stream_peak(chain, sources["long"])
    *rows, end = [row for chunk in chunks for row in chunk]
    assert len(rows) > 40 and max(len(chunk) for chunk in chunks) <= 4
    assert end["status"] == "end" and all(row["status"] == "ok" for row in rows)
    assert all(row["captions"][0]["verdict"] for row in rows)  # every stage of the chain ran
    # Four times the audio, about the same peak: memory follows the decode block, not the source.
    decoded_long = 12 * 60 * 16000 * 4
    assert long_peak < 1.3 * short_peak + 2_000_000, (short_peak, long_peak)
    assert long_peak < 0.6 * decoded_long, long_peak


def test_a_cut_that_breaks_halfway_fails_the_remaining_segments(long_source, monkeypatch):
    real_cut = annotate.cut.cut_segments

    def breaks_after_two(blocks, segments):
        for index, item in enumerate(real_cut(blocks, segments)):
            if index == 2:
                raise OSError("disk vanished")
            yield item

    monkeypatch.setattr(annotate.cut, "cut_segments", breaks_after_two)
    source_stages = StageChain([spec for spec in build_stage_specs(RunConfig()) if spec.takes == "sources"])
    *rows, end = source_stages([{"input_path": long_source, "status": "ok"}])
    assert len(rows) > 2 and end["status"] == "end" and end["outcome"] == "segmented"
    assert [row["status"] for row in rows[:2]] == ["ok", "ok"]
    assert {(row["status"], row["error_type"], row["error_message"]) for row in rows[2:]} == {
        ("failed", "OSError", "disk vanished")
    }
    assert len({row["segment_id"] for row in rows}) == len(rows)


def test_a_source_that_cannot_be_read_is_one_failed_row(tmp_path):
    chain = StageChain(build_stage_specs(RunConfig()))
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    [[row]] = list(chain.stream([{"input_path": str(bad), "status": "ok"}], chunk_rows=4))
    assert row["status"] == "failed" and row["error_stage"] == "ingest"  # before any model sees it
    assert row["error_type"] == "AudioDecodeError" and row.get("segment_id") is None
