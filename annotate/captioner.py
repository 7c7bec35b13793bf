"""The acoustic captioner: a cascaded CPU backend that words the measure stage's tags, after
ParaSpeechCaps' basic tags. It measures nothing itself: it reads the row's `tags`. Each segment gets
`views` fine-grained captions (view i drawn with seed `seed + i`) and, optionally, one global
one-sentence caption.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, ClassVar

import pyarrow as pa
from pydantic import Field, model_validator

from annotate.base import BatchStage, Row, StrictConfig
from annotate.caption_types import CAPTIONS_COLUMN
from annotate.phrasing import PROMPT_HASH, PROMPT_ID, fine_caption, global_caption
from annotate.tags import StyleTags

BACKEND = "acoustic"
MODEL = "stylecaps-acoustic/1"


class AcousticCaptionerConfig(StrictConfig):
    views: Annotated[int, Field(ge=0, le=64)] = Field(
        default=3, description="Fine views per segment; 0 with global_view writes the global view alone."
    )
    seed: int = 0
    global_view: bool = True

    @model_validator(mode="after")
    def _writes_something(self) -> AcousticCaptionerConfig:
        if self.views == 0 and not self.global_view:
            raise ValueError("views 0 and global_view false: the acoustic captioner would write no caption")
        return self


def caption_record(text: str, granularity: str, view: int, seed: int) -> dict[str, Any]:
    """A caption with its provenance; the verifier fills `verdict`."""
    return {
        "text": text,
        "granularity": granularity,
        "view": view,
        "backend": BACKEND,
        "model": MODEL,
        "prompt_id": PROMPT_ID,
        "prompt_hash": PROMPT_HASH,
        "seed": seed,
        "sampling": "{}",
        "verdict": None,
    }


class AcousticCaptioner(BatchStage):
    name: ClassVar[str] = "caption"
    columns: ClassVar[tuple[pa.Field, ...]] = (CAPTIONS_COLUMN,)

    def __init__(self, config: AcousticCaptionerConfig) -> None:
        self.config = config

    def setup(self) -> None:
        """Nothing to load: wording is templates."""

    def teardown(self) -> None:
        """Nothing to release."""

    def captions(self, segment_id: str, tags: StyleTags) -> list[dict[str, Any]]:
        out = []
        for view in range(self.config.views):
            seed = self.config.seed + view
            rng = random.Random(f"{segment_id}:{seed}")
            out.append(caption_record(fine_caption(tags, rng), "fine", view, seed))
        if self.config.global_view:
            out.append(caption_record(global_caption(tags), "global", 0, self.config.seed))
        return out

    def __call__(self, rows: list[Row]) -> list[Row]:
        """The rows with these captions appended to any an earlier captioner wrote."""
        return [
            {
                **row,
                "captions": [
                    *(row.get("captions") or []),
                    *self.captions(row["segment_id"], StyleTags(**row["tags"])),
                ],
            }
            for row in rows
        ]
