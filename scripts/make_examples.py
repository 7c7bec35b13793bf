#!/usr/bin/env python3
"""Regenerate the bundled example speech corpus under ``examples/``.

The corpus is synthetic but real speech: every clip is rendered with espeak-ng or
festival (text2wave), assembled with explicit pauses and post-processed with sox.
All generating parameters are fixed in this file, so the output is reproducible:

    python scripts/make_examples.py            # writes examples/corpus, labels.csv, manifest.jsonl

Standard library only; needs the CLI tools espeak-ng, text2wave (festival with the
kal_diphone and cmu_us_slt_arctic_hts voices) and sox (built with FLAC support).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRED_TOOLS = ("espeak-ng", "text2wave", "sox")

TARGET_RATE = 16000
EDGE_SILENCE_S = 0.5  # leading and trailing silence of every clip
TARGET_SPEECH_S = 5.0  # add sentences until the text lasts this long at the clip's nominal speaking rate
FESTIVAL_WPM = 160  # festival has no rate parameter: nominal rate used for its sentence selection
MIN_CLIP_S = 6.0  # every finished clip is checked to lie inside [MIN_CLIP_S, MAX_CLIP_S]
MAX_CLIP_S = 14.0
MIN_SENTENCES = 2
MAX_SENTENCES = 4
FLAC_LEVEL = "8"

# Plain, neutral sentences: no quotation marks, commas or apostrophes.
SENTENCES: tuple[str, ...] = (
    "The library opens at nine every weekday morning.",
    "A light rain fell over the harbour all afternoon.",
    "Fresh bread is delivered to the shop before sunrise.",
    "The train to the coast leaves from platform four.",
    "Please close the window when you leave the room.",
    "Our garden has tomatoes and a small apple tree.",
    "The meeting was moved to Thursday at two.",
    "Most of the guests arrived a little early.",
    "He painted the fence a pale shade of green.",
    "The museum has a large collection of old maps.",
    "She keeps her notes in a blue paper folder.",
    "The river is calm and wide near the bridge.",
    "We bought new shelves for the kitchen last week.",
    "The bus was quiet on the way home.",
    "A small cat sat on the wall in the sun.",
    "The report will be ready by the end of the month.",
    "Children played football in the park after school.",
    "The old clock in the hall still keeps good time.",
    "He reads the newspaper with his morning coffee.",
    "The road through the valley is narrow and steep.",
    "Our neighbours planted a row of tall sunflowers.",
    "The bakery on the corner sells warm cinnamon rolls.",
    "It usually snows here in the middle of January.",
    "The students handed in their essays on time.",
    "A gentle wind moved the leaves of the oak tree.",
    "The ferry crosses the lake twice every hour.",
    "She found an old photograph inside the book.",
    "The lights in the office switch off at midnight.",
    "We walked along the beach until the sun went down.",
    "The farmer checked the fences before the storm arrived.",
)

ACCENTS = {"en-us": "us", "en-gb-x-rp": "gb-rp", "en-gb-scotland": "gb-scotland"}
FESTIVAL_VOICES = {  # festival voice -> (language tag, gender, short speaker name)
    "kal_diphone": ("en-us", "male", "kal"),
    "cmu_us_slt_arctic_hts": ("en-us", "female", "slt"),
}
LABEL_COLUMNS = (
    "path",
    "engine",
    "voice",
    "variant",
    "gender",
    "accent",
    "pitch",
    "rate",
    "amplitude",
    "whisper",
    "sox_effect",
    "contrast_set",
    "sample_rate",
    "channels",
    "duration_s",
    "text",
)


@dataclass(frozen=True)
class ClipSpec:
    """Generating parameters of one clip (everything that ends up in labels.csv)."""

    index: int  # running number: unique file-name suffix
    text_key: int  # selects the sentences and pauses; paired contrast clips share it
    engine: str  # espeak-ng | festival
    voice: str  # espeak-ng voice (language) or festival voice name
    variant: str  # espeak-ng variant (m3, f2, whisperf, ...) or festival voice name
    contrast_set: str
    pitch: int | None = None
    rate: int | None = None
    amplitude: int | None = None
    sox_effect: str = ""
    sample_rate: int = TARGET_RATE
    channels: int = 1

    @property
    def language(self) -> str:
        return FESTIVAL_VOICES[self.voice][0] if self.engine == "festival" else self.voice

    @property
    def accent(self) -> str:
        return ACCENTS[self.language]

    @property
    def gender(self) -> str:
        if self.engine == "festival":
            return FESTIVAL_VOICES[self.voice][1]
        return "female" if self.variant.startswith("f") or self.variant == "whisperf" else "male"

    @property
    def whisper(self) -> bool:
        return self.variant.startswith("whisper")

    @property
    def speaker(self) -> str:
        if self.engine == "festival":
            return f"festival_{FESTIVAL_VOICES[self.voice][2]}"
        return f"espeak_{self.voice}_{self.variant}"

    @property
    def duration_factor(self) -> float:
        """How much the sox effect stretches the duration (only ``tempo`` changes it)."""
        name, _, value = self.sox_effect.partition(" ")
        return 1.0 / float(value) if name == "tempo" else 1.0

    @property
    def filename(self) -> str:
        if self.engine == "festival":
            parts = ["festival", self.voice]
        else:
            parts = ["espeak", self.voice, self.variant]
            parts += [f"p{self.pitch}", f"s{self.rate}", f"a{self.amplitude}"]
        if self.sox_effect:
            parts.append(effect_slug(self.sox_effect))
        if self.sample_rate != TARGET_RATE:
            parts.append(f"{self.sample_rate // 1000}k")
        if self.channels == 2:
            parts.append("stereo")
        parts.append(f"{self.index:02d}")
        return "_".join(parts) + ".flac"


def effect_slug(effect: str) -> str:
    """File-name part for a sox effect: ``pitch +300`` -> ``pitchup300``, ``tempo 0.8`` -> ``tempo080``."""
    name, _, value = effect.partition(" ")
    if name == "pitch":
        return f"pitch{'down' if value.startswith('-') else 'up'}{value.lstrip('+-')}"
    return f"{name}{round(float(value) * 100):03d}"


def espeak_clip(
    text_key: int,
    contrast_set: str,
    voice: str = "en-us",
    variant: str = "m3",
    *,
    pitch: int = 50,
    rate: int = 160,
    amplitude: int = 100,
    sox_effect: str = "",
    sample_rate: int = TARGET_RATE,
    channels: int = 1,
) -> ClipSpec:
    """Describe an espeak-ng clip (index is assigned later by ``clip_specs``)."""
    return ClipSpec(
        index=0,
        text_key=text_key,
        engine="espeak-ng",
        voice=voice,
        variant=variant,
        contrast_set=contrast_set,
        pitch=pitch,
        rate=rate,
        amplitude=amplitude,
        sox_effect=sox_effect,
        sample_rate=sample_rate,
        channels=channels,
    )


def festival_clip(text_key: int, voice: str) -> ClipSpec:
    return ClipSpec(
        index=0, text_key=text_key, engine="festival", voice=voice, variant=voice, contrast_set="festival"
    )


def clip_specs() -> list[ClipSpec]:
    """Return the fixed list of clips. Each contrast set uses en-us+m3 and changes one parameter."""
    specs: list[ClipSpec] = []
    for k in range(4):  # contrast pairs share text_key and rate, hence the same sentences
        specs += [espeak_clip(k, "pitch_low", pitch=20), espeak_clip(k, "pitch_high", pitch=80)]
    for k in range(4, 8):
        specs += [espeak_clip(k, "rate_slow", rate=110), espeak_clip(k, "rate_fast", rate=240)]
    for k in range(8, 12):
        specs += [espeak_clip(k, "amp_soft", amplitude=40), espeak_clip(k, "amp_loud", amplitude=190)]
    whispers = [("en-us", "whisperf"), ("en-gb-x-rp", "whisperf"), ("en-us", "whisperf")]
    whispers += [("en-gb-scotland", "whisperf"), ("en-us", "whisper"), ("en-gb-x-rp", "whisper")]
    specs += [
        espeak_clip(k, "whisper", voice, variant) for k, (voice, variant) in enumerate(whispers, start=12)
    ]
    festival_voices = ["kal_diphone"] * 3 + ["cmu_us_slt_arctic_hts"] * 3
    specs += [festival_clip(k, voice) for k, voice in enumerate(festival_voices, start=18)]
    effects = ("pitch +300", "pitch -300", "tempo 0.8", "tempo 1.25")
    specs += [espeak_clip(k, "sox", sox_effect=effect) for k, effect in enumerate(effects, start=24)]
    mixed = (  # voice, variant, pitch, rate, sample rate, channels
        ("en-gb-x-rp", "m1", 40, 170, TARGET_RATE, 1),
        ("en-gb-scotland", "m2", 55, 180, 22050, 1),
        ("en-us", "m4", 45, 150, TARGET_RATE, 1),
        ("en-gb-x-rp", "m5", 60, 185, 22050, 1),
        ("en-gb-scotland", "m6", 35, 160, TARGET_RATE, 1),
        ("en-us", "m7", 50, 175, 44100, 2),
        ("en-us", "f1", 65, 165, TARGET_RATE, 1),
        ("en-gb-x-rp", "f2", 50, 190, 22050, 1),
        ("en-gb-scotland", "f3", 40, 155, TARGET_RATE, 1),
        ("en-us", "f4", 55, 170, 22050, 1),
        ("en-gb-x-rp", "f5", 60, 160, TARGET_RATE, 1),
    )
    for k, (voice, variant, pitch, rate, sample_rate, channels) in enumerate(mixed, start=28):
        options = {"pitch": pitch, "rate": rate, "sample_rate": sample_rate, "channels": channels}
        specs.append(espeak_clip(k, "mixed", voice, variant, **options))
    return [replace(spec, index=number) for number, spec in enumerate(specs, start=1)]


def sentence_order(text_key: int) -> list[str]:
    """Consecutive sentences from a start that hops through the list (7 is coprime to 30)."""
    start = (text_key * 7) % len(SENTENCES)
    return [SENTENCES[(start + offset) % len(SENTENCES)] for offset in range(MAX_SENTENCES)]


def select_sentences(spec: ClipSpec) -> list[str]:
    """Enough sentences (2..4) to fill TARGET_SPEECH_S at the nominal rate.

    The choice depends on the parameters only, never on the rendered audio, so contrast pairs
    with equal rate (pitch, amplitude) speak exactly the same text.
    """
    wpm = (spec.rate or FESTIVAL_WPM) / spec.duration_factor
    words_needed = TARGET_SPEECH_S * wpm / 60
    chosen: list[str] = []
    for sentence in sentence_order(spec.text_key):
        chosen.append(sentence)
        if len(chosen) >= MIN_SENTENCES and sum(len(text.split()) for text in chosen) >= words_needed:
            break
    return chosen


def pause_s(text_key: int, gap: int) -> float:
    """Deterministic pause between sentences, 0.3 .. 0.8 s."""
    return 0.3 + 0.1 * ((text_key * 3 + gap * 2) % 6)


def run(cmd: Sequence[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr.strip()}")
    for line in result.stderr.strip().splitlines():  # e.g. sox clipping warnings: show them, never hide them
        print(f"  {cmd[0]}: {line}", file=sys.stderr)


def espeak_command(spec: ClipSpec, text: str, wav: Path) -> list[str]:
    options = ["-p", str(spec.pitch), "-s", str(spec.rate), "-a", str(spec.amplitude)]
    return ["espeak-ng", "-v", f"{spec.voice}+{spec.variant}", *options, "-w", str(wav), text]


def festival_command(spec: ClipSpec, text_file: Path, wav: Path) -> list[str]:
    return ["text2wave", "-eval", f"(voice_{spec.voice})", "-o", str(wav), str(text_file)]


def synthesize(spec: ClipSpec, text: str, wav: Path) -> None:
    """Render one sentence to a mono 16-bit WAV at the engine's native rate."""
    if spec.engine == "espeak-ng":
        run(espeak_command(spec, text, wav))
    else:
        text_file = wav.with_suffix(".txt")
        text_file.write_text(text + "\n", encoding="ascii")
        run(festival_command(spec, text_file, wav))
    if not wav.is_file() or wav.stat().st_size == 0:  # text2wave exits 0 even when the voice is missing
        raise RuntimeError(f"{spec.engine} wrote no audio for voice {spec.voice!r} (is it installed?)")


def concatenate(spec: ClipSpec, wavs: Sequence[Path], target: Path) -> None:
    """Join sentence WAVs with digital-silence pauses (all share the engine's format)."""
    with wave.open(str(wavs[0]), "rb") as first:
        params = first.getparams()
    with wave.open(str(target), "wb") as out:
        out.setparams(params)
        for number, wav in enumerate(wavs):
            if number:
                frames = round(pause_s(spec.text_key, number - 1) * params.framerate)
                out.writeframes(b"\x00" * frames * params.sampwidth * params.nchannels)
            with wave.open(str(wav), "rb") as handle:
                if handle.getparams()[:3] != params[:3]:
                    raise RuntimeError(f"{wav}: format differs from {wavs[0]}")
                out.writeframes(handle.readframes(handle.getnframes()))


def sox_command(spec: ClipSpec, source: Path, native_rate: int, target: Path) -> list[str]:
    """Effect, channel layout, resampling, edge silence; -D: no dither, no gain change anywhere."""
    cmd = ["sox", "-D", str(source), "-C", FLAC_LEVEL, "-b", "16", str(target)]
    if spec.sox_effect:
        cmd += spec.sox_effect.split()
    if spec.channels == 2:
        cmd += ["channels", "2"]
    if spec.sample_rate != native_rate:
        cmd += ["rate", "-v", str(spec.sample_rate)]
    return [*cmd, "pad", str(EDGE_SILENCE_S), str(EDGE_SILENCE_S)]


def sox_info(path: Path, flag: str) -> int:
    result = subprocess.run(["sox", "--i", flag, str(path)], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def make_clip(spec: ClipSpec, corpus: Path, workdir: Path) -> dict[str, str]:
    """Render one clip into ``corpus`` and return its labels.csv row."""
    texts = select_sentences(spec)
    wavs = [workdir / f"sentence{number}.wav" for number in range(len(texts))]
    for text, wav in zip(texts, wavs, strict=True):
        synthesize(spec, text, wav)
    joined = workdir / "joined.wav"
    concatenate(spec, wavs, joined)
    with wave.open(str(joined), "rb") as handle:
        native_rate = handle.getframerate()
    target = corpus / spec.filename
    run(sox_command(spec, joined, native_rate, target))

    sample_rate, channels = sox_info(target, "-r"), sox_info(target, "-c")
    if (sample_rate, channels) != (spec.sample_rate, spec.channels):
        wanted = (spec.sample_rate, spec.channels)
        raise RuntimeError(f"{target}: got (rate, channels) {(sample_rate, channels)}, wanted {wanted}")
    duration = sox_info(target, "-s") / sample_rate
    if not MIN_CLIP_S <= duration <= MAX_CLIP_S:
        raise RuntimeError(f"{target}: duration {duration:.2f} s outside [{MIN_CLIP_S}, {MAX_CLIP_S}]")
    optional = {"pitch": spec.pitch, "rate": spec.rate, "amplitude": spec.amplitude}
    return {
        "path": f"corpus/{spec.filename}",
        "engine": spec.engine,
        "voice": spec.language,
        "variant": spec.variant,
        "gender": spec.gender,
        "accent": spec.accent,
        **{key: "" if value is None else str(value) for key, value in optional.items()},
        "whisper": str(spec.whisper).lower(),
        "sox_effect": spec.sox_effect,
        "contrast_set": spec.contrast_set,
        "sample_rate": str(sample_rate),
        "channels": str(channels),
        "duration_s": f"{duration:.3f}",
        "text": " ".join(texts),
    }


def manifest_entry(spec: ClipSpec, label: dict[str, str]) -> dict[str, str]:
    """A manifest row: the path relative to the manifest's folder, the speaker, the transcript
    (the rules verifier checks captions against it) and free metadata columns."""
    return {
        "path": f"corpus/{spec.filename}",
        "speaker": spec.speaker,
        "transcript": label["text"],
        "engine": spec.engine,
        "contrast_set": spec.contrast_set,
        "gender": spec.gender,
        "accent": spec.accent,
    }


def write_outputs(out: Path, labels: Sequence[dict[str, str]], manifest: Sequence[dict[str, str]]) -> None:
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(labels)
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as handle:
        for entry in manifest:
            handle.write(json.dumps(entry) + "\n")


def check_tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"error: missing command-line tool(s): {', '.join(missing)} "
            "(Debian: apt-get install espeak-ng festival festvox-kallpc16k festvox-us-slt-hts sox)"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "examples",
        help="output folder (default: examples/ in the repository)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    corpus = args.out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for stale in corpus.glob("*.flac"):  # the corpus is regenerated as a whole
        stale.unlink()

    specs = clip_specs()
    labels: list[dict[str, str]] = []
    for spec in specs:
        with tempfile.TemporaryDirectory(prefix="make_examples_") as tmp:
            labels.append(make_clip(spec, corpus, Path(tmp)))
    write_outputs(
        args.out, labels, [manifest_entry(spec, label) for spec, label in zip(specs, labels, strict=True)]
    )

    seconds = sum(float(row["duration_s"]) for row in labels)
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"{len(labels)} clips, {seconds:.1f} s of audio, {size} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
