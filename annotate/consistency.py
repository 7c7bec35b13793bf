"""Speaker-consistency stage (FS-CLAP): drops a planned segment whose voice does not match the other
segments of its speaker label in the source.

Each planned segment is embedded (annotate.speakers); its score is s = mean((cos + 1) / 2) over the
other segments with the same label; below `threshold` it is dropped as `speaker_inconsistent` with its
score, and kept segments carry theirs (`speaker_similarity`). Segments without a label (silero, or
pyannote-vad without a manifest speaker) are compared with the whole source, which then must hold one
speaker. A segment alone with its label has no score and is kept. The audio is streamed once and only
the embeddings are held: 1 KB per segment.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from annotate.audio import iter_mono_16k
from annotate.base import BatchStage, Row, StrictConfig, audio_path_of
from annotate.plan import DROP_SPEAKER_INCONSISTENT, PLAN_KEY, DroppedSpeech, plan_of
from annotate.segment import Span, cut_segments
from annotate.speakers import SpeakerEmbedder, SpeakerEmbedderConfig, consistency_scores


class SpeakerConsistencyConfig(StrictConfig):
    enabled: bool = False
    threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.65,
        description="FS-CLAP's cut on s = mean((cos + 1) / 2). With GE2E on CPU every other-speaker "
        "intruder we measured scored >= 0.70, so 0.65 drops nothing there: 0.84 is the GE2E setting.",
    )
    embedding: SpeakerEmbedderConfig = SpeakerEmbedderConfig()
    embed_batch: Annotated[int, Field(gt=0)] = Field(default=16, description="Segments embedded together.")
    decode_block_s: Annotated[float, Field(gt=0)] = 60.0


class SpeakerConsistencyStage(BatchStage):
    name: ClassVar[str] = "speaker_consistency"
    columns: ClassVar[tuple[pa.Field, ...]] = (pa.field("speaker_similarity", pa.float64()),)

    def __init__(self, config: SpeakerConsistencyConfig) -> None:
        self.config = config
        self._embedder = SpeakerEmbedder(config.embedding)

    def setup(self) -> None:
        self._embedder.setup()

    def teardown(self) -> None:
        self._embedder = SpeakerEmbedder(self.config.embedding)  # the loaded model goes with the old one

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [self._checked(row) for row in rows]

    def _checked(self, row: Row) -> Row:
        plan = plan_of(row)
        if len(plan.segments) < 2:
            return row
        embeddings = self._embed(audio_path_of(row), [Span(s.start, s.end) for s in plan.segments])
        labels = [s.speaker or row.get("speaker") or "" for s in plan.segments]
        scores = consistency_scores(embeddings, labels)
        drops = {
            index: DroppedSpeech(
                segment.start,
                segment.end,
                segment.speaker,
                DROP_SPEAKER_INCONSISTENT,
                segment.end - segment.start,
                stage=self.name,
                score=score,
            )
            for index, (segment, score) in enumerate(zip(plan.segments, scores, strict=True))
            if score is not None and score < self.config.threshold
        }
        kept = {i: score for i, score in enumerate(scores) if score is not None and i not in drops}
        return {**row, PLAN_KEY: plan.with_drops(drops, kept).to_json()}

    def _embed(self, path: str, spans: list[Span]) -> np.ndarray:
        embedded: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        for index, (span, wave) in enumerate(
            cut_segments(iter_mono_16k(path, self.config.decode_block_s), spans)
        ):
            if span != spans[index]:
                raise EOFError("the audio ended inside a planned segment (did the file change?)")
            batch.append(wave)
            if len(batch) == self.config.embed_batch:
                embedded.append(self._embedder.embed(batch))
                batch = []
        if batch:
            embedded.append(self._embedder.embed(batch))
        count = sum(len(rows) for rows in embedded)
        if count != len(spans):
            raise EOFError(f"the audio ended after {count} of {len(spans)} planned segments")
        return np.concatenate(embedded)
