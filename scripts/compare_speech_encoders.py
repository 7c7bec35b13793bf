"""Choose the CPU default speech encoder by what it achieves on real speech.

Each candidate is trained the same way (configs/train-demo.yaml's recipe, the same steps, the same
seed) on a demo run, then evaluated, in one run of this script:
- on real recorded speech it never saw (the RAVDESS calibration set, ../shared/calibration): zero-shot
  gender (WA, UA) from prompts, and pitch ranking: Spearman between sim(audio, "A high-pitched
  voice.") - sim(audio, "A low-pitched voice.") and the labelled f0 median, within each gender;
- on the demo run's held-out sources: text→audio retrieval R@1 (global captions) next to chance.

    .venv/bin/python scripts/compare_speech_encoders.py --run runs/demo --steps 250 --json compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train.config import load_train_config  # noqa: E402
from train.evaluate import (  # noqa: E402
    clips_from_manifest,
    clips_from_runs,
    embed_clips,
    prompt_ranking,
    retrieval,
    zero_shot,
)
from train.export import load_model  # noqa: E402
from train.loop import train_worker  # noqa: E402

CANDIDATES = {
    "ge2e+spectral+pitch (frozen)": {
        "kind": "ge2e",
        "window_features": ["spectral", "pitch"],
        "trainable": False,
    },
    "ge2e+pitch (frozen)": {"kind": "ge2e", "window_features": ["pitch"], "trainable": False},
    "ge2e+spectral (frozen)": {"kind": "ge2e", "window_features": ["spectral"], "trainable": False},
    "ge2e (frozen)": {"kind": "ge2e", "window_features": [], "trainable": False},
    "conv_transformer (scratch)": {"kind": "conv_transformer", "trainable": True},
}
GENDER_TEMPLATES = ["A {} speaker.", "A {} voice.", "The speaker is {}."]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=str(REPO / "runs" / "demo"), help="annotated demo run")
    parser.add_argument("--config", default=str(REPO / "configs" / "train-demo.yaml"))
    parser.add_argument("--steps", type=int, default=250, help="training steps per candidate")
    parser.add_argument("--calibration", default=str(REPO.parent / "shared" / "calibration"))
    parser.add_argument("--only", action="append", help="evaluate only these candidates (repeatable)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    base = load_train_config(args.config).model_dump(mode="json")
    base["data"]["runs"] = [args.run]
    base["max_minutes"] = None
    # The same recipe squeezed into --steps: the stages keep their proportions.
    total = sum(s["steps"] for s in base["stages"])
    base["stages"] = [{**s, "steps": max(1, round(s["steps"] * args.steps / total))} for s in base["stages"]]
    calibration = Path(args.calibration)
    real = clips_from_manifest(calibration / "labels.csv", calibration / "audio", path_column="filename")
    heldout = clips_from_runs([args.run], "heldout", base["data"]["holdout_fraction"])

    figures = {}
    for name, audio in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        config = {**base, "model": {**base["model"], "audio": audio}}
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            train_worker({"config": config, "out": folder, "export": f"{folder}/model"})
            train_s = time.perf_counter() - started
            model = load_model(f"{folder}/model")
        embedded = embed_clips(model, real)
        gender = zero_shot(model, real, "gender", GENDER_TEMPLATES, ["female", "male"], audio=embedded)
        pitch = prompt_ranking(
            model, real, "f0_median_hz", "A high-pitched voice.", "A low-pitched voice.", "gender", embedded
        )
        demo = retrieval(model, heldout, "global")
        figures[name] = {
            "train_s": train_s,
            "gender_WA": gender["WA"],
            "gender_UA": gender["UA"],
            "pitch_spearman_female": pitch["female"]["spearman"],
            "pitch_spearman_male": pitch["male"]["spearman"],
            "pitch_spearman_all": pitch["all"]["spearman"],
            "demo_heldout_R@1_text_to_audio": demo["text_to_audio"]["R@1"],
            "demo_heldout_R@1_chance": demo["chance"]["R@1"],
        }
        print(name, json.dumps(figures[name]), flush=True)

    columns = list(next(iter(figures.values())))
    print("\n| candidate | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in figures.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    print(
        f"(real speech: {len(real)} RAVDESS clips, chance gender WA 0.5; "
        f"demo held-out: {len(heldout)} segments)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
