"""The Arrow types of a segment's captions: every captioner backend writes `captions` of this type
(so two captioners' declarations agree), and the verifier fills each caption's `verdict`.

A run stores them beside the audio (pipeline.layers): a caption set holds the captions without their
verdicts (STORED_CAPTION_TYPE), a verdict version the verdicts; an export joins them back, each caption
naming its set and verdict version (EXPORTED_CAPTION_TYPE)."""

from __future__ import annotations

import pyarrow as pa

VERDICT_TYPE = pa.struct(
    [
        pa.field("passed", pa.bool_()),
        pa.field("failed_checks", pa.list_(pa.string())),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("verifier", pa.string()),
    ]
)
CAPTION_TYPE = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("granularity", pa.string()),  # fine | global
        pa.field("view", pa.int32()),
        pa.field("backend", pa.string()),
        pa.field("model", pa.string()),
        pa.field("prompt_id", pa.string()),
        pa.field("prompt_hash", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("sampling", pa.string()),  # JSON of the sampling parameters
        pa.field("verdict", VERDICT_TYPE),
    ]
)
CAPTIONS_COLUMN = pa.field("captions", pa.list_(CAPTION_TYPE))
STORED_CAPTION_TYPE = pa.struct([field for field in CAPTION_TYPE if field.name != "verdict"])
EXPORTED_CAPTION_TYPE = pa.struct(
    [*CAPTION_TYPE, pa.field("caption_set", pa.string()), pa.field("verdict_version", pa.string())]
)
