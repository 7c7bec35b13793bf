"""Caption sets and verdict versions: the layers a run keeps beside its audio.

    RUN/captions/<set id>/part-00000.parquet        one row per row of shards/part-00000.parquet, in
    RUN/verdicts/<version id>/part-00000.parquet    its order and with its row groups

A caption set is one captioning of the run (annotate's caption stage, or `stylecaps recaption`): per
segment its captions without verdicts. A verdict version is one verification of one caption set
(annotate's verify stage, or `stylecaps reverify`): per segment one verdict per caption of the set, in
the set's order. A segment the layer's stage failed on has no captions (verdicts) and the error instead.
The manifest lists sets and versions with their provenance and, per shard, the committed part (path,
rows, bytes, sha256). Shards, which hold the audio, are never rewritten: a new layer is new files.

Readers pick layers by id (`choose`, whose default is documented there and printed by every command
that reads them) and join a shard row group with the same row group of each chosen layer
(`LayerJoin`), checking that the segment ids line up.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from annotate.caption_types import (
    EXPORTED_CAPTION_TYPE,
    STORED_CAPTION_TYPE,
    VERDICT_TYPE,
)
from annotate.measure import MeasureConfig
from pipeline.config import CaptionConfig, RunConfig, VerifyConfig
from pipeline.contract import CONTRACT_VERSION, METADATA_KEY
from pipeline.errors import UsageError

LayerKind = Literal["captions", "verdicts"]
CAPTIONS: LayerKind = "captions"
VERDICTS: LayerKind = "verdicts"
MANIFEST_KEYS: dict[LayerKind, str] = {CAPTIONS: "caption_sets", VERDICTS: "verdict_versions"}

_ERROR_FIELDS = (pa.field("error_type", pa.string()), pa.field("error_message", pa.string()))
LAYER_SCHEMAS: dict[LayerKind, pa.Schema] = {
    CAPTIONS: pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("captions", pa.list_(STORED_CAPTION_TYPE)),
            *_ERROR_FIELDS,
        ]
    ),
    VERDICTS: pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("verdicts", pa.list_(VERDICT_TYPE)),
            *_ERROR_FIELDS,
        ]
    ),
}
EXPORTED_CAPTIONS = pa.field("captions", pa.list_(EXPORTED_CAPTION_TYPE))


class LayerError(UsageError):
    """A caption set or verdict version that is unknown, ambiguous or does not line up with its shard."""


@dataclass(frozen=True)
class LayerInfo:
    """A layer's identity and provenance, as the manifest lists it."""

    kind: LayerKind
    id: str
    provenance: dict[str, Any]  # backend, model, prompts / checklist, config and its hash; caption_set

    def parquet_schema(self, shard: str) -> pa.Schema:
        """The schema of this layer's part for `shard`, saying in its metadata what it belongs to."""
        ours = {"contract_version": CONTRACT_VERSION, "layer": self.kind, "id": self.id, "shard": shard}
        return LAYER_SCHEMAS[self.kind].with_metadata({METADATA_KEY: json.dumps(ours).encode()})


def _short_hash(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _llm_of(backend: str, vllm: Any, openai: Any) -> tuple[Any, str]:
    """The LLM settings of a caption or verify section's backend (None for acoustic / rules) and the
    model it names."""
    if backend == "vllm":
        return vllm, vllm.engine.model_id
    if backend == "openai":
        return openai, openai.endpoint.model
    return None, backend


def caption_set_of(caption: CaptionConfig) -> LayerInfo:
    """The caption set a caption config writes: `caption.set_id`, else `<backend>-<config hash>`."""
    config = caption.model_dump(mode="json", exclude={"set_id"})
    config_hash = _short_hash(config)
    settings, model = _llm_of(caption.backend, caption.vllm, caption.openai)
    prompts = []
    if settings is not None:
        prompts = [settings.fine_prompt] + (
            [settings.global_prompt] if caption.global_backend == "same" else []
        )
    provenance = {
        "backend": caption.backend,
        "global_backend": caption.global_backend,
        "model": model,
        "prompts": prompts,
        "config_hash": config_hash,
        "config": config,
    }
    return LayerInfo(CAPTIONS, caption.set_id or f"{caption.backend}-{config_hash}", provenance)


def verdict_version_of(verify: VerifyConfig, measure: MeasureConfig, caption_set: str) -> LayerInfo:
    """The verdict version a verify config writes for `caption_set`: `verify.version_id`, else
    `<backend>-<hash of the config, the tag bins the rules use and the set>`."""
    config = verify.model_dump(mode="json", exclude={"version_id"})
    config_hash = _short_hash(
        {"verify": config, "bins": measure.bins.model_dump(mode="json"), "set": caption_set}
    )
    settings, model = _llm_of(verify.backend, verify.vllm, verify.openai)
    checklist = None if settings is None else Path(settings.checklist).name
    provenance = {
        "caption_set": caption_set,
        "backend": verify.backend,
        "model": model,
        "checklist": checklist,
        "config_hash": config_hash,
        "config": config,
    }
    return LayerInfo(VERDICTS, verify.version_id or f"{verify.backend}-{config_hash}", provenance)


def annotate_layers(config: RunConfig) -> tuple[LayerInfo, LayerInfo]:
    """What `annotate` writes beside the audio: the config's caption set and its verdict version."""
    caption_set = caption_set_of(config.caption)
    return caption_set, verdict_version_of(config.verify, config.measure, caption_set.id)


# -- the manifest's entries ------------------------------------------------------------------------------
def layers_of(manifest: dict[str, Any], kind: LayerKind) -> dict[str, dict[str, Any]]:
    return manifest.get(MANIFEST_KEYS[kind], {})


def register(manifest: dict[str, Any], info: LayerInfo, written_by: str) -> dict[str, Any]:
    """Add the layer to the manifest (in place) unless it is there; return its entry. A layer id the
    manifest holds with other provenance is refused: a set or version never changes once written."""
    entries = manifest.setdefault(MANIFEST_KEYS[info.kind], {})
    entry = entries.get(info.id)
    if entry is None:
        entry = entries[info.id] = {
            "id": info.id,
            **info.provenance,
            "written_by": written_by,
            "created": time.time(),
            "parts": {},
        }
    elif entry["config_hash"] != info.provenance["config_hash"]:
        raise LayerError(
            f"{info.kind} layer '{info.id}' exists with another config (hash {entry['config_hash']}, "
            f"this one is {info.provenance['config_hash']}): give this one another id"
        )
    return entry


def add_part(manifest: dict[str, Any], info: LayerInfo, shard: str, part: dict[str, Any]) -> None:
    layers_of(manifest, info.kind)[info.id]["parts"][shard] = part


def remove_part(manifest: dict[str, Any], info: LayerInfo, shard: str) -> None:
    layers_of(manifest, info.kind)[info.id]["parts"].pop(shard, None)


def part_path(info: LayerInfo, shard: str) -> str:
    """Where the layer's part for a shard (`shards/part-00000.parquet`) lives, relative to the run."""
    return f"{info.kind}/{info.id}/{Path(shard).name}"


def listed_parts(manifest: dict[str, Any]) -> set[str]:
    """Every committed layer part of a run, relative to its root."""
    return {
        part["path"]
        for kind in MANIFEST_KEYS
        for entry in layers_of(manifest, kind).values()
        for part in entry["parts"].values()
    }


def remove_unlisted_parts(root: Path, manifest: dict[str, Any]) -> None:
    """Delete the layer files the manifest does not list: the leftovers of an interrupted commit."""
    keep = listed_parts(manifest)
    for kind in MANIFEST_KEYS:
        for path in (root / kind).glob("*/*"):
            if path.relative_to(root).as_posix() not in keep:
                path.unlink()


# -- splitting the stream into layers --------------------------------------------------------------------
def split_captions(table: pa.Table) -> dict[LayerKind, pa.Table]:
    """The caption set rows and the verdict version rows of stream rows that carry `captions` (with
    verdicts), one row per segment, in order; a row a stage failed on keeps its error."""
    lists = table.column("captions").combine_chunks()
    # flatten(), unlike field(), honours the offset a sliced or taken struct array has
    values = dict(zip(lists.type.value_type.names, lists.values.flatten(), strict=True))
    stored = pa.StructArray.from_arrays(
        [values[f.name] for f in STORED_CAPTION_TYPE], fields=list(STORED_CAPTION_TYPE)
    )
    ids = table.column("segment_id")
    errors = [
        table.column(name).combine_chunks()
        if name in table.column_names
        else pa.nulls(table.num_rows, pa.string())
        for name in ("error_type", "error_message")
    ]
    mask = pc.or_(lists.is_null(), pc.is_valid(errors[0]))  # a failed row keeps no captions, only its error
    return {
        CAPTIONS: pa.table(
            [ids, pa.ListArray.from_arrays(lists.offsets, stored, mask=mask), *errors],
            schema=LAYER_SCHEMAS[CAPTIONS],
        ),
        VERDICTS: pa.table(
            [ids, pa.ListArray.from_arrays(lists.offsets, values["verdict"], mask=mask), *errors],
            schema=LAYER_SCHEMAS[VERDICTS],
        ),
    }


# -- choosing and joining --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """The caption sets a reader uses, each with the verdict version it takes (None: no verdicts)."""

    sets: tuple[tuple[str, str | None], ...]
    why: tuple[str, ...]  # one line per set: how its verdict version was chosen

    def describe(self) -> str:
        return "; ".join(self.why) if self.why else "no caption sets"

    def as_metadata(self) -> list[dict[str, str | None]]:
        return [{"caption_set": set_id, "verdict_version": version} for set_id, version in self.sets]


def choose(
    manifest: dict[str, Any], captions: Sequence[str] | None = None, verdicts: Sequence[str] | None = None
) -> Selection:
    """The caption sets and verdict versions a reader uses.

    Default: every caption set of the run, in the order they were created; for each set, the verdict
    version named in `verdicts` if one is, else the set's only verdict version, else none (a set with
    several versions and none named is an error listing them). Never silently the newest."""
    sets = layers_of(manifest, CAPTIONS)
    versions = layers_of(manifest, VERDICTS)
    if captions:
        unknown = [set_id for set_id in captions if set_id not in sets]
        if unknown:
            raise LayerError(f"no caption set '{unknown[0]}' in the run; it has {_names(sets)}")
        chosen = list(dict.fromkeys(captions))
    else:
        chosen = sorted(sets, key=lambda set_id: sets[set_id]["created"])
    named: dict[str, str] = {}
    for version in verdicts or ():
        if version not in versions:
            raise LayerError(f"no verdict version '{version}' in the run; it has {_names(versions)}")
        set_id = versions[version]["caption_set"]
        if set_id not in chosen:
            raise LayerError(
                f"verdict version '{version}' judges caption set '{set_id}', which is not chosen"
            )
        if set_id in named:
            raise LayerError(f"verdict versions '{named[set_id]}' and '{version}' judge one set: name one")
        named[set_id] = version
    picked, why = [], []
    for set_id in chosen:
        own = [v for v, entry in versions.items() if entry["caption_set"] == set_id]
        if set_id in named:
            version, reason = named[set_id], "as named"
        elif len(own) == 1:
            version, reason = own[0], "its only version"
        elif not own:
            version, reason = None, "no verdicts"
        else:
            raise LayerError(
                f"caption set '{set_id}' has verdict versions {', '.join(sorted(own))}: "
                "name one with --verdicts"
            )
        picked.append((set_id, version))
        why.append(f"captions {set_id} with " + (f"verdicts {version} ({reason})" if version else reason))
    return Selection(tuple(picked), tuple(why))


def _names(entries: dict[str, Any]) -> str:
    return ", ".join(sorted(entries)) or "none"


class LayerJoin:
    """A run's shard row groups with the chosen layers' captions and verdicts joined in as `captions`
    (EXPORTED_CAPTIONS), each caption naming its set and verdict version."""

    def __init__(self, root: Path, manifest: dict[str, Any], selection: Selection) -> None:
        self.root = root
        self.selection = selection
        self._sets = layers_of(manifest, CAPTIONS)
        self._versions = layers_of(manifest, VERDICTS)
        self._footers: dict[Path, pq.FileMetaData] = {}  # a part's footer, parsed once

    def read(
        self, file: pq.ParquetFile, shard: str, index: int, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Row group `index` of the shard `file` (run-relative path `shard`): its `columns` (all by
        default; segment_id always), then the joined `captions`."""
        wanted = None if columns is None else list(dict.fromkeys(["segment_id", *columns]))
        table = file.read_row_group(index, columns=wanted)
        return table.append_column(EXPORTED_CAPTIONS, self.captions(shard, index, table["segment_id"]))

    def captions(self, shard: str, index: int, segment_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """The joined captions of row group `index` of `shard` (run-relative path), whose segment ids
        are given; segments a set has no part for (a shard added after it was written) get none from it.
        Column-wise: each set's captions flattened with their verdicts, then regrouped by segment in
        set order (a stable sort by row)."""
        rows = len(segment_ids)
        values, parents = [], []
        for set_id, version in self.selection.sets:
            captions = self._column(self._sets[set_id], shard, index, "captions", segment_ids)
            if captions is None:
                continue
            verdicts = (
                self._column(self._versions[version], shard, index, "verdicts", segment_ids)
                if version
                else None
            )
            flat = captions.flatten()  # a null list (a failed segment) contributes nothing
            fields = dict(zip(STORED_CAPTION_TYPE.names, flat.flatten(), strict=True))
            fields |= {
                "verdict": _verdicts_of(captions, verdicts, len(flat)),
                "caption_set": pa.array([set_id] * len(flat), pa.string()),
                "verdict_version": pa.array([version] * len(flat), pa.string()),
            }
            values.append(
                pa.StructArray.from_arrays(
                    [fields[f.name] for f in EXPORTED_CAPTION_TYPE], fields=list(EXPORTED_CAPTION_TYPE)
                )
            )
            parent = pc.list_parent_indices(captions)  # flatten() drops what backs a null list: so here
            parents.append(parent.filter(pc.is_valid(captions).take(parent)))
        if not values:
            return pa.array([[]] * rows, EXPORTED_CAPTIONS.type)
        parent = pa.concat_arrays(parents)
        grouped = pa.concat_arrays(values).take(pc.sort_indices(parent))  # Arrow's sort is stable
        offsets = np.concatenate([[0], np.cumsum(np.bincount(parent.to_numpy(), minlength=rows))])
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), grouped)

    def _column(
        self,
        entry: dict[str, Any],
        shard: str,
        index: int,
        column: str,
        segment_ids: pa.ChunkedArray | pa.Array,
    ) -> pa.ListArray | None:
        part = entry["parts"].get(shard)
        if part is None:
            return None
        path = self.root / part["path"]
        if path not in self._footers:
            self._footers[path] = pq.ParquetFile(path).metadata
        file = pq.ParquetFile(path, metadata=self._footers[path])
        table = file.read_row_group(index, columns=["segment_id", column])
        lined_up = (
            table.num_rows == len(segment_ids) and pc.all(pc.equal(table["segment_id"], segment_ids)).as_py()
        )
        if not lined_up:
            raise LayerError(
                f"{path}: row group {index} does not line up with {shard}; run stylecaps verify-run"
            )
        return table.column(column).combine_chunks()


def _verdicts_of(captions: pa.ListArray, verdicts: pa.ListArray | None, count: int) -> pa.Array:
    """One verdict per flattened caption: a segment's verdicts where it has one per caption, else none
    (a segment the verifier failed on, or a set without a version)."""
    if verdicts is None:
        return pa.nulls(count, VERDICT_TYPE)
    lengths = [pc.fill_null(pc.list_value_length(lists), 0) for lists in (captions, verdicts)]
    if pc.all(pc.equal(*lengths)).as_py() is not False:
        return verdicts.flatten()
    kept = [
        judged if judged is not None and len(judged) == len(own) else [None] * len(own)
        for own, judged in zip(captions.to_pylist(), verdicts.to_pylist(), strict=True)
        if own is not None
    ]
    return pa.array([verdict for row in kept for verdict in row], VERDICT_TYPE)


def read_with_captions(
    root: str | Path,
    captions: Sequence[str] | None = None,
    verdicts: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """A run's committed rows (all shard columns, or `columns`) with the chosen layers joined in as
    `captions`, in shard order: for reports and tests that want a whole (small) run in memory."""
    from pipeline.rundir import read_manifest  # the run directory module imports this one

    root = Path(root)
    manifest = read_manifest(root)
    join = LayerJoin(root, manifest, choose(manifest, captions, verdicts))
    tables = []
    for shard in (entry["path"] for entry in manifest["shards"]):
        file = pq.ParquetFile(root / shard)
        tables += [join.read(file, shard, index, columns) for index in range(file.num_row_groups)]
    return pa.concat_tables(tables)
