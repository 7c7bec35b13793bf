"""PyannotePipelineDiarizer from a local pipeline folder (real segmentation, random embeddings)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from annotate.audio import SAMPLE_RATE
from annotate.diarize_pipeline import PyannotePipelineConfig, PyannotePipelineDiarizer
from tests.frontend.conftest import assert_exclusive_turns


@pytest.mark.slow
def test_pipeline_folder_gives_sorted_exclusive_turns_inside_the_file(
    tiny_diarization_pipeline_dir, pyannote_sample, tmp_path
):
    # 10 s in which both reference speakers talk: the random ResNet34 costs about 3.5 s per second on CPU.
    audio, rate = sf.read(pyannote_sample.audio, dtype="float32")
    excerpt = tmp_path / "excerpt.wav"
    sf.write(excerpt, audio[5 * rate : 15 * rate], rate)
    diarizer = PyannotePipelineDiarizer(PyannotePipelineConfig(pipeline_dir=tiny_diarization_pipeline_dir))
    diarizer.setup()

    source = diarizer.turns(excerpt)

    assert source.turns
    assert_exclusive_turns(source, 10 * SAMPLE_RATE)
    # Speech regions come from the real segmentation model: most of the reference speech is in turns.
    speech = np.zeros(source.total_samples, dtype=bool)
    for turn in source.turns:
        speech[turn.start : turn.end] = True
    for a, b in source.overlap:
        speech[a:b] = True
    reference = np.zeros(source.total_samples, dtype=bool)
    for segment in pyannote_sample.annotation.get_timeline().support():
        a = max(0, round((segment.start - 5) * SAMPLE_RATE))
        b = min(source.total_samples, round((segment.end - 5) * SAMPLE_RATE))
        if a < b:
            reference[a:b] = True
    assert (speech & reference).sum() > 0.9 * reference.sum()


def test_a_folder_without_a_pipeline_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        PyannotePipelineDiarizer(PyannotePipelineConfig(pipeline_dir=tmp_path)).setup()
