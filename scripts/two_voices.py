"""Write a two-speaker recording from real voices: alternating turns of about 6 s by the two speakers of
pyannote.audio's bundled sample (its single-speaker stretches, each said twice per turn), 0.4 s apart.
For trying and testing diarization: tests and bench/frontend_cpu.py use it, and so can a user.

    python scripts/two_voices.py OUT.flac --minutes 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

# Single-speaker stretches of the sample (seconds), from its reference RTTM.
VOICE_A = ((11.1, 14.4), (18.7, 21.4))
VOICE_B = ((14.8, 17.8), (22.0, 27.7))
PAUSE_S = 0.4


def pyannote_sample() -> Path:
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"


def write_two_voices(out: Path, seconds: float, pause_s: float = PAUSE_S) -> list[tuple[float, float, str]]:
    """Write at least `seconds` of alternating turns `pause_s` apart to `out`, turn by turn (a long file
    never sits in memory; another pause makes another file's content); return the true turns as
    (start_s, end_s, voice 'a' or 'b')."""
    audio, rate = sf.read(pyannote_sample(), dtype="float32")
    pause = np.zeros(int(pause_s * rate), dtype=np.float32)
    truth: list[tuple[float, float, str]] = []
    position = 0
    with sf.SoundFile(out, "w", samplerate=rate, channels=1, subtype="PCM_16") as sink:
        index = 0
        while position < seconds * rate:
            voice, stretches = ("a", VOICE_A) if index % 2 == 0 else ("b", VOICE_B)
            start, end = stretches[(index // 2) % len(stretches)]
            stretch = audio[int(start * rate) : int(end * rate)]
            turn = np.concatenate([stretch, np.zeros(int(0.2 * rate), np.float32), stretch])
            sink.write(np.concatenate([turn, pause]))
            truth.append((position / rate, (position + turn.size) / rate, voice))
            position += turn.size + pause.size
            index += 1
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    turns = write_two_voices(args.out, args.minutes * 60)
    print(f"{args.out}: {len(turns)} turns, {turns[-1][1] / 60:.1f} minutes")


if __name__ == "__main__":
    main()
