"""The end-of-run summary table, from a run's totals (manifest.json) and this invocation's timing."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def summary_table(
    totals: dict[str, Any],
    wall_s: float | None = None,
    audio_s_processed: float | None = None,
    title: str = "stylecaps run",
) -> Table:
    outcomes = totals.get("outcomes", {})
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")

    def add(label: str, value: str) -> None:
        table.add_row(label, value)

    add("inputs", _fmt_count(totals.get("inputs", 0)))
    add("  with segments", _fmt_count(outcomes.get("segmented", 0)))
    add("  without speech", _fmt_count(outcomes.get("no_speech", 0)))
    add("  speech too short", _fmt_count(outcomes.get("speech_too_short", 0)))
    if outcomes.get("all_dropped"):
        add("  every segment dropped", _fmt_count(outcomes["all_dropped"]))
    add("  failed", _fmt_count(outcomes.get("failed", 0)))
    if totals.get("open_inputs"):
        add("  committed in part", _fmt_count(totals["open_inputs"]))
    add("audio hours (inputs)", f"{totals.get('audio_s', 0.0) / 3600:.3f}")
    add("audio hours (segments)", f"{totals.get('segment_audio_s', 0.0) / 3600:.3f}")
    add("segments", _fmt_count(totals.get("segments", 0)))
    add("segments dropped", _fmt_count(totals.get("dropped", 0)))
    for reason, n in sorted(totals.get("dropped_by_reason", {}).items()):
        add(f"  {reason}", _fmt_count(n))
    add("captions", _fmt_count(totals.get("captions", 0)))
    add("  passed", _fmt_count(totals.get("passed", 0)))
    add("  rejected", _fmt_count(totals.get("rejected", 0)))
    for check, n in sorted(totals.get("rejected_by_check", {}).items()):
        add(f"    by {check}", _fmt_count(n))
    add("failures", _fmt_count(totals.get("failures", 0)))
    for error_type, n in sorted(totals.get("failures_by_type", {}).items()):
        add(f"  {error_type}", _fmt_count(n))
    add("shards", _fmt_count(totals.get("shards", 0)))
    if wall_s is not None:
        add("wall time (this invocation)", f"{wall_s:.1f} s")
        if audio_s_processed is not None and wall_s > 0:
            add("audio seconds per wall second", f"{audio_s_processed / wall_s:.1f}")
    return table
