"""The `caption` stage: one or two captioners in turn, each appending its views to a segment's captions.

A run may take its granularities from different captioners, as FCaps did (fine views from Qwen3-Omni,
the global one from a tag-based pipeline): `caption.backend` writes the fine views (and the global view
when `caption.global_backend` is `same`); `global_backend: acoustic` adds the acoustic captioner's
global view after it.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from annotate.caption_types import CAPTIONS_COLUMN
from annotate.in_turn import StagesInTurn


class CaptionStage(StagesInTurn):
    name: ClassVar[str] = "caption"
    columns: ClassVar[tuple[pa.Field, ...]] = (CAPTIONS_COLUMN,)
