#!/usr/bin/env python3
"""Generate the demo's training corpus of many synthetic voices (not committed: `make demo` builds it).

The bundled examples hold a handful of voices, so a model trained on them alone learns those voices
rather than what the caption words mean (issue 9). This corpus varies what the words must not
depend on and sweeps what they describe:

- who speaks: every human-sounding espeak-ng variant that declares its gender (16 female, 20 male)
  in six English accents, and festival's diphone (male) and HTS (female) voices;
- pitch, rate and level independently of the voice: espeak-ng's -p 0..99, -s 95..270 and -a 40..190
  on every variant, sox tempo changes on the festival voices, a random peak level, and a room reverb
  on a third of the clips (real recordings are not dry);
- pitch beyond espeak-ng's range, with the voice's formants kept: on half of the clips Praat's
  "Change gender" (PSOLA, formant ratio 1) moves the median F0 to a target drawn log-uniformly from
  85-320 Hz for male voices and 150-480 Hz for female ones. espeak-ng's male variants stop near
  180 Hz, while real men reach 250-360 Hz when they shout; without such clips a model learns
  "high F0 means female".

Gender comes from the voice (the manifest gives it); every other caption word comes from the
pipeline's own measure and caption stages when the corpus is annotated (`make demo`):

    python scripts/make_voice_corpus.py --out runs/voice-corpus --clips 400
    stylecaps annotate --config configs/demo.yaml --input runs/voice-corpus/manifest.jsonl \
        --out runs/demo-voices

The clips are a pure function of (--seed, --clips). Needs espeak-ng, text2wave and sox (`make env`)
and parselmouth (a dependency of the measure stage): run it with the project's Python.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from make_examples import SENTENCES, check_tools, run

ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# espeak-ng variants (espeak-ng-data/voices/!v) whose file declares the gender; robots, croak,
# whispers (no pitch to describe) and the demonic voice are left out.
FEMALE_VARIANTS = (
    "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "f1", "f2", "f3", "f4", "f5",
    "grandma", "linda", "steph", "steph2", "steph3",
)  # fmt: skip
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Denis", "Diogo", "Henrique", "Hugo", "Marco",
    "Storm", "antonio", "michel", "miguel", "sandro", "travis", "victor",
)  # fmt: skip
FESTIVAL_VOICES = {"kal_diphone": "male", "cmu_us_slt_arctic_hts": "female"}
FESTIVAL_SHARE = 0.15
REVERB_SHARE = 0.33
PITCH_TARGET_SHARE = 0.5
PITCH_TARGET_HZ = {"female": (150.0, 480.0), "male": (85.0, 320.0)}
FESTIVAL_WPM = 160  # festival's nominal rate, for choosing how many sentences a clip needs
SPEECH_S = 5.0
SAMPLE_RATE = 16000
EDGE_SILENCE_S = 0.3


@dataclass(frozen=True)
class VoiceClip:
    """Everything that decides one clip; the manifest row carries it as metadata."""

    name: str
    engine: str  # espeak-ng | festival
    voice: str  # espeak-ng accent or festival voice
    variant: str
    gender: str
    text: str
    pitch: int | None  # espeak-ng -p
    rate: int | None  # espeak-ng -s (words per minute)
    amplitude: int | None  # espeak-ng -a
    pitch_target_hz: float  # median F0 after Praat's Change gender; 0 = as synthesized
    tempo: float  # sox tempo (festival voices)
    peak_db: float  # sox gain -n: the clip's sample peak
    reverb: int  # sox reverberance in percent; 0 = dry

    @property
    def speaker(self) -> str:
        return f"{self.engine}_{self.voice}_{self.variant}"


def sentences_for(words_per_minute: float, rng: random.Random) -> list[str]:
    """Random sentences, at least two, enough for SPEECH_S at the nominal rate (segments need 3 s)."""
    chosen: list[str] = []
    for sentence in rng.sample(SENTENCES, len(SENTENCES)):
        chosen.append(sentence)
        if len(chosen) >= 2 and sum(len(s.split()) for s in chosen) >= SPEECH_S * words_per_minute / 60:
            break
    return chosen


def draw_clips(count: int, seed: int) -> list[VoiceClip]:
    """`count` clips, half of them female, drawn from one seeded generator."""
    rng = random.Random(seed)
    clips = []
    for index in range(count):
        gender = "female" if index % 2 == 0 else "male"
        peak_db = round(rng.uniform(-24.0, -1.0), 1)
        reverb = rng.randint(10, 60) if rng.random() < REVERB_SHARE else 0
        if rng.random() < FESTIVAL_SHARE:
            voice = next(v for v, g in FESTIVAL_VOICES.items() if g == gender)
            engine, variant, pitch, rate, amplitude = "festival", voice, None, None, None
            tempo = round(rng.uniform(0.8, 1.25), 2)
        else:
            voice = rng.choice(ACCENTS)
            variant = rng.choice(FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS)
            engine, tempo = "espeak-ng", 1.0
            pitch, rate, amplitude = rng.randint(0, 99), rng.randint(95, 270), rng.randint(40, 190)
        low, high = PITCH_TARGET_HZ[gender]
        target = (
            round(math.exp(rng.uniform(math.log(low), math.log(high))))
            if rng.random() < PITCH_TARGET_SHARE
            else 0
        )
        words_per_minute = rate if rate is not None else FESTIVAL_WPM * tempo
        text = " ".join(sentences_for(words_per_minute, rng))
        name = f"voice_{index:04d}_{gender}.flac"
        clips.append(
            VoiceClip(name, engine, voice, variant, gender, text, pitch, rate, amplitude, target, tempo,
                      peak_db, reverb)
        )  # fmt: skip
    return clips


def synthesis_command(clip: VoiceClip, wav: Path, workdir: Path) -> list[str]:
    if clip.engine == "espeak-ng":
        options = ["-p", str(clip.pitch), "-s", str(clip.rate), "-a", str(clip.amplitude)]
        return ["espeak-ng", "-v", f"{clip.voice}+{clip.variant}", *options, "-w", str(wav), clip.text]
    text_file = workdir / "text.txt"
    text_file.write_text(clip.text + "\n", encoding="ascii")
    return ["text2wave", "-eval", f"(voice_{clip.voice})", "-o", str(wav), str(text_file)]


def effects(clip: VoiceClip) -> list[str]:
    """sox effects after synthesis: tempo, mono 16 kHz, reverb, edge silence, peak level."""
    chain = ["gain", "-10"]  # headroom, so that resampling and reverb never clip before the final level
    if clip.tempo != 1.0:
        chain += ["tempo", str(clip.tempo)]
    chain += ["channels", "1", "rate", "-v", str(SAMPLE_RATE)]
    if clip.reverb:
        chain += ["reverb", str(clip.reverb)]
    chain += ["pad", str(EDGE_SILENCE_S), str(EDGE_SILENCE_S)]
    return [*chain, "gain", "-n", str(clip.peak_db)]


def move_pitch(wav: Path, median_hz: float) -> Path:
    """The clip with its median F0 at `median_hz` and its formants where they were (Praat's PSOLA)."""
    import parselmouth
    from parselmouth.praat import call

    moved = wav.with_name("moved.wav")
    sound = call(parselmouth.Sound(str(wav)), "Change gender", 75, 600, 1.0, median_hz, 1.0, 1.0)
    call(sound, "Scale peak", 0.99)  # PSOLA can overshoot full scale; sox sets the level afterwards
    sound.save(str(moved), "WAV")
    return moved


def render(clip: VoiceClip, corpus: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="voice_corpus_") as tmp:
        wav = Path(tmp) / "speech.wav"
        run(synthesis_command(clip, wav, Path(tmp)))
        if not wav.is_file() or wav.stat().st_size == 0:  # text2wave exits 0 when the voice is missing
            raise RuntimeError(f"{clip.engine} wrote no audio for voice {clip.voice!r} (is it installed?)")
        if clip.pitch_target_hz:
            wav = move_pitch(wav, clip.pitch_target_hz)
        run(["sox", "-D", str(wav), "-b", "16", str(corpus / clip.name), *effects(clip)])


def manifest_row(clip: VoiceClip) -> dict[str, object]:
    """Path, speaker and gender for the pipeline, the text as the transcript, the rest as metadata."""
    fields = asdict(clip)
    return {
        "path": f"corpus/{fields.pop('name')}",
        "speaker": clip.speaker,
        "gender": fields.pop("gender"),
        "transcript": fields.pop("text"),
        **fields,
    }


def write_corpus(out: Path, clips: Sequence[VoiceClip], jobs: int) -> None:
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for stale in corpus.glob("*.flac"):  # the corpus is regenerated as a whole
        stale.unlink()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda clip: render(clip, corpus), clips))
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as handle:
        for clip in clips:
            handle.write(json.dumps(manifest_row(clip)) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for corpus/ and manifest.jsonl")
    parser.add_argument("--clips", type=int, default=400, help="number of clips (half female)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="synthesis processes at a time")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    clips = draw_clips(args.clips, args.seed)
    write_corpus(args.out, clips, args.jobs)
    print(f"{len(clips)} clips of {len({c.speaker for c in clips})} voices in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
