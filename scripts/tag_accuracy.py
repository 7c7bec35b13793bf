"""Tag accuracy of a run over the bundled example corpus, per attribute.

Expected tags follow from the generating parameters in examples/labels.csv where they imply one:
espeak -p <= 25 → low pitch, -p >= 75 → high (relative to the voice's gender); -s <= 120 → slow,
-s >= 230 → fast, 150..190 → measured; whisper variants → whispered, others → modal; gender as labeled
(the manifest gives it). espeak's -a only scales the waveform, it does not make the voice louder: the
loudness tag is vocal effort, so the -a 40 and -a 190 clips of each text must get the same loudness tag
("loudness (same for -a 40 and -a 190)").
Usage: python scripts/tag_accuracy.py RUN_DIR [--labels examples/labels.csv]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent


GAIN_PAIR = "loudness (same for -a 40 and -a 190)"


def expected_tags(label: dict[str, str]) -> dict[str, str]:
    expected = {
        "gender": label["gender"],
        "phonation": "whispered" if label["whisper"] == "true" else "modal",
    }
    if label["engine"] != "espeak-ng" or label["sox_effect"] or label["whisper"] == "true":
        return expected
    pitch, rate = int(label["pitch"]), int(label["rate"])
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
    return expected


def tag_accuracy(run_dir: Path, labels_csv: Path) -> dict[str, dict[str, object]]:
    """Per attribute: correct, total and the (source file, expected, got) misses; over all segments."""
    with open(labels_csv, newline="") as handle:
        labels = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    scores: dict[str, dict[str, object]] = defaultdict(lambda: {"correct": 0, "total": 0, "misses": []})

    def score(attribute: str, name: str, want: str | None, got: str | None) -> None:
        scores[attribute]["total"] += 1
        if got == want:
            scores[attribute]["correct"] += 1
        else:
            scores[attribute]["misses"].append((name, want, got))

    loudness_by_text: dict[str, dict[int, str | None]] = defaultdict(dict)
    for shard in sorted((run_dir / "shards").glob("*.parquet")):
        for row in pq.read_table(shard, columns=["source_path", "tags"]).to_pylist():
            name = Path(row["source_path"]).name
            label = labels.get(name)
            if label is None:
                continue
            for attribute, want in expected_tags(label).items():
                score(attribute, name, want, row["tags"][attribute])
            if label["contrast_set"] in ("amp_soft", "amp_loud"):
                loudness_by_text[label["text"]][int(label["amplitude"])] = row["tags"]["loudness"]
    for text, by_amplitude in sorted(loudness_by_text.items()):
        score(GAIN_PAIR, text[:40], by_amplitude.get(40), by_amplitude.get(190))
    return dict(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--labels", type=Path, default=REPO / "examples" / "labels.csv")
    args = parser.parse_args()
    for attribute, score in sorted(tag_accuracy(args.run_dir, args.labels).items()):
        share = score["correct"] / score["total"]
        print(f"{attribute:38s} {score['correct']:3d}/{score['total']:3d} = {share:.1%}")
        for miss in score["misses"]:
            print(f"    {miss[0]}: expected {miss[1]}, got {miss[2]}")


if __name__ == "__main__":
    main()
