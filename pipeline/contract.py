"""The shard contract: the core columns every shard has, the columns each stage declares, the version,
and the metadata that travels inside every Parquet file (our own `stylecaps` key, and HF datasets'
`huggingface` features key so `datasets.load_dataset("parquet", ...)` decodes the audio column).

This module imports no stage: a stage class declares its shard columns (`columns`, see
annotate.base.BatchStage) and a run's shard schema is the core columns followed by the columns of the
stages its config builds (`ShardContract.of`). Between stages rows travel with the *stream* schema: the
bookkeeping columns (status, source bookkeeping, error and drop fields), which the writer routes to the
ledger, the failures and the dropped journals, plus the shard columns.

Captions are a layer beside the audio, not shard columns: the stream carries `captions` (LAYER_COLUMNS)
from the caption stage to the writer, which writes them to the run's caption set and verdict version
files (pipeline.layers). An export joins them back into self-contained shards (`with_captions`).

Bump CONTRACT_VERSION on any change to the core columns, to a stage's columns or to the metadata;
readers refuse another major version (`contract_problem`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

from annotate.audio import SAMPLE_RATE
from pipeline.errors import UsageError

# 2.0: core columns plus the columns each configured stage declares; the stages are listed in the metadata
# 3.0: captions and verdicts live in caption sets and verdict versions beside the shards (pipeline.layers)
CONTRACT_VERSION = "3.0"
METADATA_KEY = b"stylecaps"
AUDIO_CODEC = "flac/pcm16"

AUDIO_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# What every shard has, whatever stages ran: ids, position in the source, speaker, audio, and what the
# manifest gives (a transcript stage fills `transcript` too).
CORE_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("segment_id", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("source_path", pa.string()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("speaker", pa.string()),
    pa.field("audio", AUDIO_TYPE),  # 16 kHz mono FLAC, HF datasets' Audio layout
    pa.field("transcript", pa.string()),
    pa.field("metadata", pa.string()),  # JSON object of the manifest's free columns
)

# Stream columns written to layers beside the shards (pipeline.layers), not into them.
LAYER_COLUMNS = ("captions",)

# Stream-only columns: never in a shard, routed by the writer (statuses are annotate.base's).
BOOKKEEPING_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("input_path", pa.string()),  # the resolved path: the resume key of an input
    pa.field("status", pa.string()),  # ok | failed | dropped | end
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


class ColumnConflictError(UsageError):
    """Two stages of one config (or a stage and the core) declare one column name with different types,
    or a stage declares a bookkeeping column."""


class DeclaresColumns(Protocol):
    """What the contract needs of a stage: its name and its shard columns (pipeline.stages.StageSpec)."""

    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> tuple[pa.Field, ...]: ...


class StageColumns(NamedTuple):
    stage: str
    columns: tuple[pa.Field, ...]


@dataclass(frozen=True)
class ShardContract:
    """The shard schema of a run: the core columns, then each stage's declared columns in stage order.
    Two stages may declare the same column with the same type (two captioners both writing captions):
    it appears once, where first declared."""

    stages: tuple[StageColumns, ...] = ()
    columns_schema: pa.Schema = field(init=False, repr=False, compare=False)  # shard and layer columns

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns_schema", _assemble(self.stages))

    @cached_property
    def shard_schema(self) -> pa.Schema:
        """The columns of a run's shard files: the declared ones less the layers."""
        return pa.schema([f for f in self.columns_schema if f.name not in LAYER_COLUMNS])

    @classmethod
    def of(cls, stages: Iterable[DeclaresColumns]) -> ShardContract:
        return cls(tuple(StageColumns(stage.name, tuple(stage.columns)) for stage in stages))

    @cached_property
    def stream_schema(self) -> pa.Schema:
        """What rows travel with between stages: bookkeeping plus the shard columns, all nullable
        (a failed or end row has no segment id)."""
        return stream_schema(self.columns_schema)

    @cached_property
    def parquet_schema(self) -> pa.Schema:
        """The shard schema with the metadata every shard file carries."""
        ours = {
            "contract_version": CONTRACT_VERSION,
            "sample_rate": SAMPLE_RATE,
            "audio_codec": AUDIO_CODEC,
            "stages": [{"name": s.stage, "columns": [f.name for f in s.columns]} for s in self.stages],
        }
        return _with_metadata(self.shard_schema, ours)


def stream_schema(columns: Iterable[pa.Field]) -> pa.Schema:
    """The bookkeeping columns, then `columns` (shard and layer columns), all nullable."""
    return pa.schema([*BOOKKEEPING_COLUMNS, *(f.with_nullable(True) for f in columns)])


def _with_metadata(schema: pa.Schema, ours: dict[str, Any]) -> pa.Schema:
    features = {"info": {"features": _huggingface_features(schema)}}
    return schema.with_metadata(
        {METADATA_KEY: json.dumps(ours).encode(), b"huggingface": json.dumps(features).encode()}
    )


def self_contained(shard_schema: pa.Schema, captions: pa.Field, selection: dict[str, Any]) -> pa.Schema:
    """The schema of an exported shard: a run shard's columns (and metadata), then `captions` joined from
    the caption sets and verdict versions that `selection` describes (recorded in the metadata too)."""
    ours = {**contract_of(shard_schema), "captions": selection}
    return _with_metadata(pa.schema([*shard_schema.remove_metadata(), captions]), ours)


def _assemble(stages: Sequence[StageColumns]) -> pa.Schema:
    bookkeeping = {f.name for f in BOOKKEEPING_COLUMNS}
    owners = dict.fromkeys((f.name for f in CORE_COLUMNS), "the core")
    fields = {f.name: f for f in CORE_COLUMNS}
    for stage, columns in stages:
        for column in columns:
            if column.name in bookkeeping:
                raise ColumnConflictError(
                    f"stage '{stage}' declares column '{column.name}', a bookkeeping column of the "
                    "stream: give the stage's column another name"
                )
            known = fields.get(column.name)
            if known is None:
                fields[column.name], owners[column.name] = column, f"stage '{stage}'"
            elif not known.type.equals(column.type):
                raise ColumnConflictError(
                    f"{owners[column.name]} and stage '{stage}' both declare shard column "
                    f"'{column.name}', as {known.type} and {column.type}: they cannot run in one config"
                )
    return pa.schema(list(fields.values()))


def _huggingface_features(schema: pa.Schema) -> dict[str, Any]:
    """HF datasets' features of a shard schema, with `audio` as an Audio feature."""
    from datasets import Audio, Features  # only the writer needs it: a slow import

    features = Features.from_arrow_schema(schema)
    features["audio"] = Audio(sampling_rate=SAMPLE_RATE)
    return features.to_dict()


def stream_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts with any subset of the stream columns) as an Arrow table of the stream `schema`
    (ShardContract.stream_schema)."""
    return pa.Table.from_pylist(rows, schema=schema)


def contract_of(schema: pa.Schema) -> dict[str, Any]:
    """The stylecaps metadata of a shard's schema; raises if the file is not a stylecaps shard."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError("not a stylecaps shard: no 'stylecaps' key in the Parquet schema metadata")
    return json.loads(raw)


def same_major(version: str) -> bool:
    return version.split(".")[0] == CONTRACT_VERSION.split(".")[0]


def contract_problem(schema: pa.Schema, needed: Iterable[str] = ()) -> str | None:
    """Why a shard with this schema cannot be read here (not ours, another major version, a needed
    column missing), in one line; None when it can."""
    try:
        ours = contract_of(schema)
    except ValueError as error:
        return str(error)
    version = ours["contract_version"]
    if not same_major(version):
        return f"contract {version}, this stylecaps reads {CONTRACT_VERSION}"
    missing = [name for name in needed if name not in schema.names]
    if missing:
        stages = ", ".join(stage["name"] for stage in ours["stages"])
        return f"no column(s) {', '.join(missing)}: the run's stages were {stages}"
    return None
