"""The shard contract: the Arrow schema of shard rows, its version, and the metadata that travels
inside every Parquet file (our own `stylecaps` key and HF datasets' `huggingface` features key, so
`datasets.load_dataset("parquet", ...)` decodes the audio column).

Between stages rows travel with the *stream* schema: the shard columns plus bookkeeping columns
(status, source bookkeeping, error fields) that the writer routes to the ledger and failures table.
Bump CONTRACT_VERSION on any change to SHARD_SCHEMA; readers check the major version.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pyarrow as pa

from annotate.audio import SAMPLE_RATE
from annotate.measure import MEASUREMENT_NAMES
from annotate.tags import TAG_NAMES

# 1.1: measurement columns (gender, formants, alpha ratio, nuclei) and gender tags; 1.2: speaker_similarity
CONTRACT_VERSION = "1.2"
METADATA_KEY = b"stylecaps"

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
AUDIO_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
TAGS_TYPE = pa.struct([pa.field(name, pa.string()) for name in TAG_NAMES])

SHARD_SCHEMA = pa.schema(
    [
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("speaker", pa.string()),
        pa.field("speaker_similarity", pa.float64()),  # speaker_consistency's score of a kept segment
        pa.field("audio", AUDIO_TYPE),
        *[pa.field(name, pa.float64()) for name in MEASUREMENT_NAMES],
        pa.field("tags", TAGS_TYPE),
        pa.field("transcript", pa.string()),
        pa.field("metadata", pa.string()),  # JSON object of the manifest's free columns
        pa.field("captions", pa.list_(CAPTION_TYPE)),
    ]
)

STREAM_SCHEMA = pa.schema(
    [
        pa.field("input_path", pa.string()),  # the resolved path: the resume key of an input
        pa.field("status", pa.string()),  # ok | failed | end (annotate.base)
        pa.field("outcome", pa.string()),  # on end rows: what became of the source
        pa.field("source_duration_s", pa.float64()),
        pa.field("dropped_speech_s", pa.float64()),
        pa.field("resume_after_s", pa.float64()),  # resumed source: segments starting up to here are done
        pa.field("audio_path", pa.string()),  # separated vocals that later stages decode (annotate.base)
        pa.field("segment_plan", pa.string()),  # a source's plan between segment and cut (annotate.plan)
        pa.field("error_stage", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("drop_stage", pa.string()),  # on dropped rows (annotate.base.dropped_row)
        pa.field("drop_reason", pa.string()),
        pa.field("drop_score", pa.float64()),
        pa.field("gender", pa.string()),  # given in a manifest or source spec: female | male | None
        *[f.with_nullable(True) for f in SHARD_SCHEMA],
    ]
)

FAILURES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),  # segment_id, else source_id, else the input path
        pa.field("input_path", pa.string()),
        pa.field("source_path", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("segment_id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("message", pa.string()),
    ]
)

# Segments a stage dropped (too short, two speakers, ...): never shard rows, journaled with the reason.
DROPPED_SCHEMA = pa.schema(
    [
        pa.field("input_path", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("segment_id", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("score", pa.float64()),  # what the stage decided on, when it has a number
    ]
)

# The run's ledger: one row per finished input, what became of it.
SOURCES_SCHEMA = pa.schema(
    [
        pa.field("input_path", pa.string()),
        pa.field("source_path", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("outcome", pa.string()),  # segmented | no_speech | speech_too_short | all_dropped | failed
        pa.field("duration_s", pa.float64()),
        pa.field("segments", pa.int64()),
        pa.field("failed_segments", pa.int64()),
        pa.field("dropped_segments", pa.int64()),
        pa.field("dropped_speech_s", pa.float64()),
    ]
)

# Progress of inputs still open at a commit (a long source committed in parts): where to resume.
OPEN_SOURCES_SCHEMA = pa.schema(
    [
        pa.field("input_path", pa.string()),
        pa.field("source_path", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("last_start_s", pa.float64()),  # the last committed segment row's start
        pa.field("segments", pa.int64()),  # committed ok rows so far
        pa.field("failed_segments", pa.int64()),  # committed failed rows so far
        pa.field("dropped_segments", pa.int64()),  # committed dropped rows so far (null in older runs)
    ]
)


def stream_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with any subset of the stream columns) as an Arrow table of the stream schema."""
    return pa.Table.from_pylist(rows, schema=STREAM_SCHEMA)


@cache
def huggingface_features() -> dict[str, Any]:
    """HF datasets' features of the shard schema, with `audio` as an Audio feature."""
    from datasets import Audio, Features

    features = Features.from_arrow_schema(SHARD_SCHEMA)
    features["audio"] = Audio(sampling_rate=SAMPLE_RATE)
    return features.to_dict()


def shard_schema_with_metadata() -> pa.Schema:
    ours = {"contract_version": CONTRACT_VERSION, "sample_rate": SAMPLE_RATE, "audio_codec": "flac/pcm16"}
    return SHARD_SCHEMA.with_metadata(
        {
            METADATA_KEY: json.dumps(ours).encode(),
            b"huggingface": json.dumps({"info": {"features": huggingface_features()}}).encode(),
        }
    )


def contract_of(schema: pa.Schema) -> dict[str, Any]:
    """The stylecaps metadata of a shard's schema; raises if the file is not a stylecaps shard."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError("not a stylecaps shard: no 'stylecaps' key in the Parquet schema metadata")
    return json.loads(raw)
