"""Per-attribute accuracy of the measure stage on real speech (the RAVDESS calibration set), by speaker.

The calibration set (../shared/calibration, see its SOURCES.md) is used in place. Its 24 actors are
split in two halves of 6 women and 6 men each: thresholds are tuned on actors 1-12 (`--tune` prints
what that half gives), and accuracy is reported on actors 13-24 only. Every clip is measured whole,
the way `stylecaps check` measures a file, with the gender estimated from the voice unless a line
says "given".

What counts as true:
- gender: the corpus label (actor parity);
- pitch: the label's median F0 (pyworld harvest) binned with the same gender edges as the tags, for
  the labeled gender; also the label F0's thirds within each gender of the held-out half;
- speaking rate: both statements have 7 syllables, which the syllable-nucleus count is held against;
  the true rate is 7 / active_s, binned with the tag's own edges. active_s spans the frames within
  40 dB of the loudest, which in quiet takes reaches into the silence around the sentence (a true
  rate too low), so 7 / voiced_s (harvest's voiced time) is given as a second reference;
- vocal effort: the clip's active level (rms_dbfs_active) minus the median of its speaker's 30 clips
  (RAVDESS recorded each actor at one gain), binned at the terciles of the tuning half.
The measured_* caption rules are held against the same truths: every held-out clip gets acoustic
captions worded from its true tags (they must pass) and from true tags with one attribute turned to
its opposite (the rule for that attribute must fail them; gender always, the other attributes where
the truth is an extreme). The espeak-ng example corpus adds the rate's correlation with -s.

    .venv/bin/python scripts/calibration_report.py [--tune] [--config C] [--calibration DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from annotate.acoustics import AcousticFeatures, measure
from annotate.audio import read_mono_16k
from annotate.captioner import AcousticCaptioner, AcousticCaptionerConfig
from annotate.measure import MeasureConfig, Measurements, interpret
from annotate.tags import LEVELS, StyleTags, TagBins, bin_value
from pipeline.config import load_config
from verify.rules import RulesVerifier, RulesVerifierConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CALIBRATION = Path(os.environ.get("STYLECAPS_CALIBRATION", REPO.parent / "shared" / "calibration"))
TUNING_ACTORS = range(1, 13)
SYLLABLES = 7  # "Kids are talking by the door." / "Dogs are sitting by the door."
GAIN_DB = 12.0
TARGET_GENDER_ACCURACY = 0.97  # --tune picks the lowest min_confidence reaching this on the tuning half
HIGH_AROUSAL = {"angry", "happy", "fearful", "surprised"}


@dataclass(frozen=True)
class Clip:
    label: dict[str, str]
    features: AcousticFeatures
    louder: AcousticFeatures | None = None  # the same clip +12 dB (in float: nothing clips)
    quieter: AcousticFeatures | None = None  # and -12 dB


def load_labels(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def is_tuning(label: dict[str, str]) -> bool:
    return int(label["speaker"].rsplit("_", 1)[1]) in TUNING_ACTORS


def _measure_one(task: tuple[Path, MeasureConfig, bool]) -> tuple[AcousticFeatures, ...]:
    path, config, with_gain = task
    wave = read_mono_16k(path)
    gains = (10 ** (GAIN_DB / 20), 10 ** (-GAIN_DB / 20)) if with_gain else ()
    return tuple(measure(wave * gain, config.acoustics) for gain in (1.0, *gains))


def measure_clips(
    folder: Path, labels: list[dict[str, str]], config: MeasureConfig, with_gain: bool
) -> list[Clip]:
    """The labeled clips measured (on every core), with their +-12 dB copies if `with_gain`."""
    tasks = [(folder / "audio" / label["filename"], config, with_gain) for label in labels]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(_measure_one, tasks, chunksize=8))
    return [
        Clip(label, *measured) if len(measured) == 3 else Clip(label, measured[0])
        for label, measured in zip(labels, results, strict=True)
    ]


# -- truths ------------------------------------------------------------------------------------------


def true_rate(label: dict[str, str]) -> float:
    return SYLLABLES / float(label["active_s"])


def voiced_rate(label: dict[str, str]) -> float:
    return SYLLABLES / float(label["voiced_s"])


def relative_levels(labels: list[dict[str, str]]) -> dict[str, float]:
    """Each clip's active level minus the median of its speaker's clips, by file name."""
    by_speaker: dict[str, list[float]] = defaultdict(list)
    for label in labels:
        by_speaker[label["speaker"]].append(float(label["rms_dbfs_active"]))
    medians = {speaker: statistics.median(levels) for speaker, levels in by_speaker.items()}
    return {
        label["filename"]: float(label["rms_dbfs_active"]) - medians[label["speaker"]] for label in labels
    }


def effort_edges(labels: list[dict[str, str]]) -> tuple[float, float]:
    """The terciles of the relative level over the tuning half: the effort truth's bin edges."""
    relative = relative_levels(labels)
    return terciles(relative[label["filename"]] for label in labels if is_tuning(label))


def quantiles(values: Iterable[float | None], low: float, high: float) -> tuple[float, float]:
    edges = np.quantile(np.asarray([v for v in values if v is not None], dtype=float), [low, high])
    return float(edges[0]), float(edges[1])


def terciles(values: Iterable[float | None]) -> tuple[float, float]:
    return quantiles(values, 1 / 3, 2 / 3)


def neutral_range(clips: list[Clip], value: Callable[[Clip], float | None]) -> tuple[float, float]:
    """10th and 90th percentile over the neutral takes: the range of ordinary speech."""
    return quantiles((value(clip) for clip in clips if clip.label["emotion"] == "neutral"), 0.1, 0.9)


# -- report ------------------------------------------------------------------------------------------


def share(flags: Iterable[bool]) -> str:
    flags = list(flags)
    return f"{sum(flags) / len(flags):6.1%} ({sum(flags)}/{len(flags)})" if flags else "   n/a"


def pair(edges: tuple[float, float]) -> str:
    return f"{edges[0]:.2f} / {edges[1]:.2f}"


def line(name: str, value: str) -> None:
    print(f"  {name:62s} {value}")


def correlation(xs: list[float | None], ys: list[float]) -> str:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None]
    x, y = np.array(pairs).T
    return f"Pearson {pearsonr(x, y)[0]:.3f}, Spearman {spearmanr(x, y)[0]:.3f} (n={len(pairs)})"


def tune(labels: list[dict[str, str]], tuning: list[Clip], config: MeasureConfig) -> None:
    estimated = [interpret(clip.features, None, config) for clip in tuning]
    line(
        "true rate 7 / active_s of the neutral takes, 10th percentile",
        f"{neutral_range(tuning, lambda clip: true_rate(clip.label))[0]:.2f}",
    )
    articulation = {
        c.label["filename"]: m.features.articulation_rate_sps for c, m in zip(tuning, estimated, strict=True)
    }
    line(
        "bins.articulation_rate_sps[0]: the same of the measured rate",
        f"{neutral_range(tuning, lambda clip: articulation[clip.label['filename']])[0]:.2f}",
    )
    line(
        "true rate 7 / active_s, 95th percentile of all takes",
        f"{quantiles(map(true_rate, (c.label for c in tuning)), 0.5, 0.95)[1]:.2f}",
    )
    line("speaker-relative level terciles (dB)", pair(effort_edges(labels)))
    line(
        "bins.alpha_ratio_db: terciles of the measured alpha ratio",
        pair(terciles(m.features.alpha_ratio_db for m in estimated)),
    )
    truth = [clip.label["gender"] for clip in tuning]
    print("  gender.min_confidence: coverage and accuracy of the decided on the tuning half")
    chosen = None
    for threshold in np.arange(0.5, 1.0, 0.01):
        gender_config = config.gender.model_copy(update={"min_confidence": float(threshold)})
        decided = [
            got == want
            for clip, want in zip(tuning, truth, strict=True)
            if (
                got := interpret(
                    clip.features, None, config.model_copy(update={"gender": gender_config})
                ).tags.gender
            )
            != "unknown"
        ]
        accuracy = sum(decided) / len(decided)
        if chosen is None and accuracy >= TARGET_GENDER_ACCURACY:
            chosen = threshold
        if round(threshold * 100) % 5 == 0 or threshold == chosen:
            line(
                f"    min_confidence {threshold:.2f}",
                f"coverage {len(decided) / len(tuning):.1%}, accuracy {accuracy:.1%}",
            )
    line(
        f"lowest min_confidence with accuracy >= {TARGET_GENDER_ACCURACY:.0%}",
        "none" if chosen is None else f"{chosen:.2f}",
    )


def report(labels: list[dict[str, str]], held: list[Clip], config: MeasureConfig, examples: Path) -> None:
    estimated = [interpret(clip.features, None, config) for clip in held]
    given = [interpret(clip.features, clip.label["gender"], config) for clip in held]
    _gender_report(held, estimated)
    _pitch_report(held, estimated, given, config)
    _rate_report(held, estimated, config.bins)
    _effort_report(labels, held, estimated)
    _gain_report(held, config)
    _captions_report(labels, held, estimated, config)
    _espeak_rate_report(examples, config)


def _gender_report(held: list[Clip], estimated: list[Measurements]) -> None:
    print("gender (estimated from the voice)")
    truth = [clip.label["gender"] for clip in held]
    decided = [
        (m.tags.gender, want) for m, want in zip(estimated, truth, strict=True) if m.tags.gender != "unknown"
    ]
    line("decided (not unknown)", share(m.tags.gender != "unknown" for m in estimated))
    line("accuracy of the decided", share(got == want for got, want in decided))
    line(
        "accuracy over all clips (unknown counts as wrong)",
        share(m.tags.gender == want for m, want in zip(estimated, truth, strict=True)),
    )
    for sex in ("male", "female"):
        aroused = [
            m.tags.gender
            for m, clip in zip(estimated, held, strict=True)
            if clip.label["gender"] == sex
            and clip.label["emotion"] in HIGH_AROUSAL
            and clip.label["intensity"] == "strong"
        ]
        line(
            f"  {sex}, strong high-arousal takes: called {sex} / the other / unknown",
            f"{aroused.count(sex)} / {len(aroused) - aroused.count(sex) - aroused.count('unknown')} / "
            f"{aroused.count('unknown')} of {len(aroused)}",
        )
    alone = [
        (m.features.pitch_median_hz > 154.2) == (want == "female")
        for m, want in zip(estimated, truth, strict=True)
        if m.features.pitch_median_hz is not None
    ]
    line("for comparison, F0 alone at the 154 Hz midpoint", share(alone))


def _pitch_report(
    held: list[Clip], estimated: list[Measurements], given: list[Measurements], config: MeasureConfig
) -> None:
    print("pitch (median F0, tagged relative to the gender)")
    errors = [
        abs(12 * np.log2(m.features.pitch_median_hz / float(clip.label["f0_median_hz"])))
        for m, clip in zip(estimated, held, strict=True)
        if m.features.pitch_median_hz is not None
    ]
    line("|median F0 - label F0 (harvest)| median, in semitones", f"{np.median(errors):.2f}")
    line("within 1 semitone of the label", share(e < 1 for e in errors))

    def truth(clip: Clip) -> str | None:
        bounds = config.bins.pitch_hz(clip.label["gender"])  # type: ignore[arg-type]
        return bin_value(float(clip.label["f0_median_hz"]), bounds, LEVELS["pitch"])

    line(
        "tag = label F0 in the same bins, gender given",
        share(m.tags.pitch == truth(clip) for m, clip in zip(given, held, strict=True)),
    )
    line(
        "tag = label F0 in the same bins, gender estimated",
        share(m.tags.pitch == truth(clip) for m, clip in zip(estimated, held, strict=True)),
    )
    thirds = {
        sex: terciles(float(c.label["f0_median_hz"]) for c in held if c.label["gender"] == sex)
        for sex in ("female", "male")
    }
    line(
        "tag = label F0's thirds within the gender (held-out), given",
        share(
            m.tags.pitch
            == bin_value(float(c.label["f0_median_hz"]), thirds[c.label["gender"]], LEVELS["pitch"])
            for m, c in zip(given, held, strict=True)
        ),
    )


def _rate_report(held: list[Clip], estimated: list[Measurements], bins: TagBins) -> None:
    print("speaking rate (syllable nuclei per second; the tag bins the articulation rate)")
    counts = [m.features.syllable_count for m in estimated]
    line(
        "syllable nuclei per clip (7 true): median, within +-1",
        f"{np.median(counts):.0f}, " + share(abs(c - SYLLABLES) <= 1 for c in counts),
    )
    truth = [true_rate(clip.label) for clip in held]
    voiced = [voiced_rate(clip.label) for clip in held]
    for name in ("articulation_rate_sps", "speech_rate_sps"):
        rates = [getattr(m.features, name) for m in estimated]
        line(f"{name} vs 7 / active_s", correlation(rates, truth))
        line(f"{name} vs 7 / voiced_s", correlation(rates, voiced))
    tags = [m.tags.speaking_rate for m in estimated]
    wants = [bin_value(rate, bins.articulation_rate_sps, LEVELS["speaking_rate"]) for rate in truth]
    line(
        "tag = 7 / active_s in the same bins",
        share(tag == want for tag, want in zip(tags, wants, strict=True)),
    )
    for level in ("slow", "fast"):
        line(
            f"  true {level} tagged {level} / tagged {level} truly {level}",
            share(t == level for t, w in zip(tags, wants, strict=True) if w == level)
            + " / "
            + share(w == level for t, w in zip(tags, wants, strict=True) if t == level),
        )
    line(
        "true slow called fast or true fast called slow",
        share({tag, want} == {"slow", "fast"} for tag, want in zip(tags, wants, strict=True)),
    )


def _effort_report(labels: list[dict[str, str]], held: list[Clip], estimated: list[Measurements]) -> None:
    print("vocal effort (loudness tag: alpha ratio)")
    relative = relative_levels(labels)
    truth = [relative[clip.label["filename"]] for clip in held]
    line(
        "alpha ratio vs speaker-relative level",
        correlation([m.features.alpha_ratio_db for m in estimated], truth),
    )
    line(
        "  recording level (LUFS, not gain-invariant)",
        correlation([m.features.loudness_lufs for m in estimated], truth),
    )
    wants = [bin_value(t, effort_edges(labels), LEVELS["loudness"]) for t in truth]
    line(
        "tag = speaker-relative level tercile (edges from the tuning half)",
        share(m.tags.loudness == want for m, want in zip(estimated, wants, strict=True)),
    )
    line(
        "true soft called loud or true loud called soft",
        share({m.tags.loudness, want} == {"soft", "loud"} for m, want in zip(estimated, wants, strict=True)),
    )

    def loud_share(keep: Callable[[dict[str, str]], bool]) -> str:
        return share(m.tags.loudness == "loud" for m, c in zip(estimated, held, strict=True) if keep(c.label))

    line(
        "tagged loud: angry, strong",
        loud_share(lambda lab: lab["emotion"] == "angry" and lab["intensity"] == "strong"),
    )
    line(
        "tagged loud: calm or sad, normal",
        loud_share(lambda lab: lab["emotion"] in ("calm", "sad") and lab["intensity"] == "normal"),
    )


def _gain_report(held: list[Clip], config: MeasureConfig) -> None:
    print(f"gain invariance (the same clip at +{GAIN_DB:.0f} dB and -{GAIN_DB:.0f} dB)")
    for name in ("loudness", "pitch", "speaking_rate", "gender"):
        same = []
        for clip in held:
            if clip.louder is None or clip.quieter is None:
                continue
            tags = {
                getattr(interpret(features, None, config).tags, name)
                for features in (clip.features, clip.louder, clip.quieter)
            }
            same.append(len(tags) == 1)
        line(f"{name} tag unchanged", share(same))


OPPOSITE = {
    "female": "male",
    "male": "female",
    "low": "high",
    "high": "low",
    "slow": "fast",
    "fast": "slow",
    "soft": "loud",
    "loud": "soft",
}
RULE_OF_TAG = {
    "gender": "measured_gender",
    "pitch": "measured_pitch",
    "speaking_rate": "measured_rate",
    "loudness": "measured_loudness",
}


def true_tags(
    clip: Clip,
    measured: Measurements,
    bins: TagBins,
    effort: tuple[float, float],
    relative: dict[str, float],
) -> StyleTags:
    """The clip's tags from its labels (pitch variation and phonation as measured: no label)."""
    gender = clip.label["gender"]
    return StyleTags(
        gender=gender,  # type: ignore[arg-type]
        gender_source="given",
        pitch=bin_value(
            float(clip.label["f0_median_hz"]),
            bins.pitch_hz(gender),  # type: ignore[arg-type]
            LEVELS["pitch"],
        ),
        pitch_variation=measured.tags.pitch_variation,
        speaking_rate=bin_value(true_rate(clip.label), bins.articulation_rate_sps, LEVELS["speaking_rate"]),
        loudness=bin_value(relative[clip.label["filename"]], effort, LEVELS["loudness"]),
        phonation=measured.tags.phonation,
    )


def caption_rule_rates(
    labels: list[dict[str, str]], held: list[Clip], estimated: list[Measurements], config: MeasureConfig
) -> tuple[list[bool], dict[str, list[bool]]]:
    """(flagged, per true caption; caught, per false caption by attribute), captions of 3 views each."""
    relative = relative_levels(labels)
    effort = effort_edges(labels)
    captioner = AcousticCaptioner(AcousticCaptionerConfig(views=3))
    verifier = RulesVerifier(RulesVerifierConfig(checks=list(RULE_OF_TAG.values())), config.bins)
    flagged: list[bool] = []
    caught: dict[str, list[bool]] = {attribute: [] for attribute in RULE_OF_TAG}
    for clip, measured in zip(held, estimated, strict=True):
        row = measured.as_row()
        truth = true_tags(clip, measured, config.bins, effort, relative)
        for caption in captioner.captions(clip.label["filename"], truth):
            flagged.append(not verifier.verdict(caption, None, row)["passed"])
        for attribute, rule in RULE_OF_TAG.items():
            flipped = OPPOSITE.get(getattr(truth, attribute))
            if flipped is None:
                continue
            false = replace(truth, **{attribute: flipped})
            for caption in captioner.captions(clip.label["filename"], false):
                caught[attribute].append(rule in verifier.verdict(caption, None, row)["failed_checks"])
    return flagged, caught


def _captions_report(
    labels: list[dict[str, str]], held: list[Clip], estimated: list[Measurements], config: MeasureConfig
) -> None:
    print("captions checked against the measurements (measured_* rules, acoustic wording, gender estimated)")
    flagged, caught = caption_rule_rates(labels, held, estimated, config)
    line("true captions flagged (false-flag rate)", share(flagged))
    for attribute, hits in caught.items():
        line(f"false {attribute} caught", share(hits))


def _espeak_rate_report(examples: Path, config: MeasureConfig) -> None:
    with open(examples / "labels.csv", newline="") as handle:
        labels = [
            label
            for label in csv.DictReader(handle)
            if label["engine"] == "espeak-ng" and label["whisper"] == "false" and not label["sox_effect"]
        ]
    features = [measure(read_mono_16k(examples / label["path"]), config.acoustics) for label in labels]
    speeds = [float(label["rate"]) for label in labels]
    print(f"speaking rate on the espeak-ng examples ({len(labels)} clips, -s 110-240 words/min)")
    line("articulation rate vs -s", correlation([f.articulation_rate_sps for f in features], speeds))
    line("speech rate vs -s", correlation([f.speech_rate_sps for f in features], speeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    parser.add_argument("--config", type=Path, help="Run config whose `measure` section to use.")
    parser.add_argument("--tune", action="store_true", help="Print what the tuning half gives instead.")
    parser.add_argument("--examples", type=Path, default=REPO / "examples")
    args = parser.parse_args()
    if not (args.calibration / "labels.csv").is_file():  # before any work: a wrong path is one line
        parser.error(f"no calibration set at {args.calibration} (see --calibration)")
    config = load_config(args.config).measure if args.config else MeasureConfig()
    labels = load_labels(args.calibration)
    half = [label for label in labels if is_tuning(label) == args.tune]
    clips = measure_clips(args.calibration, half, config, with_gain=not args.tune)
    if args.tune:
        print(f"tuning half: actors 1-12, {len(clips)} clips")
        tune(labels, clips, config)
    else:
        print(f"held-out half: actors 13-24, {len(clips)} clips (thresholds tuned on actors 1-12)")
        report(labels, clips, config, args.examples)


if __name__ == "__main__":
    main()
