"""Tag accuracy of a run over the bundled example corpus, per attribute.

Expected tags follow from the generating parameters in examples/labels.csv where they imply one:
espeak -p <= 25 → low pitch, -p >= 75 → high; -s <= 120 → slow, -s >= 230 → fast, 150..190 → measured;
-a <= 50 → soft, -a >= 180 → loud, -a 100 → moderate; whisper variants → whispered, others → modal.
Usage: python scripts/tag_accuracy.py RUN_DIR [--labels examples/labels.csv]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent


def expected_tags(label: dict[str, str]) -> dict[str, str]:
    expected = {"phonation": "whispered" if label["whisper"] == "true" else "modal"}
    if label["engine"] != "espeak-ng" or label["sox_effect"] or label["whisper"] == "true":
        return expected
    pitch, rate, amplitude = int(label["pitch"]), int(label["rate"]), int(label["amplitude"])
    if pitch <= 25:
        expected["pitch"] = "low"
    elif pitch >= 75:
        expected["pitch"] = "high"
    if rate <= 120:
        expected["speaking_rate"] = "slow"
    elif rate >= 230:
        expected["speaking_rate"] = "fast"
    elif 150 <= rate <= 190:
        expected["speaking_rate"] = "measured"
    if amplitude <= 50:
        expected["loudness"] = "soft"
    elif amplitude >= 180:
        expected["loudness"] = "loud"
    elif amplitude == 100:
        expected["loudness"] = "moderate"
    return expected


def tag_accuracy(run_dir: Path, labels_csv: Path) -> dict[str, dict[str, object]]:
    """Per attribute: correct, total and the (source file, expected, got) misses; over all segments."""
    with open(labels_csv, newline="") as handle:
        labels = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    scores: dict[str, dict[str, object]] = defaultdict(lambda: {"correct": 0, "total": 0, "misses": []})
    for shard in sorted((run_dir / "shards").glob("*.parquet")):
        for row in pq.read_table(shard, columns=["source_path", "tags"]).to_pylist():
            label = labels.get(Path(row["source_path"]).name)
            if label is None:
                continue
            for attribute, want in expected_tags(label).items():
                score = scores[attribute]
                score["total"] += 1
                if row["tags"][attribute] == want:
                    score["correct"] += 1
                else:
                    score["misses"].append((Path(row["source_path"]).name, want, row["tags"][attribute]))
    return dict(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--labels", type=Path, default=REPO / "examples" / "labels.csv")
    args = parser.parse_args()
    for attribute, score in sorted(tag_accuracy(args.run_dir, args.labels).items()):
        share = score["correct"] / score["total"]
        print(f"{attribute:15s} {score['correct']:3d}/{score['total']:3d} = {share:.1%}")
        for miss in score["misses"]:
            print(f"    {miss[0]}: expected {miss[1]}, got {miss[2]}")


if __name__ == "__main__":
    main()
