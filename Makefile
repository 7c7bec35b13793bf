# One-command set-up: every target creates .venv (and installs Debian packages) when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stylecaps-installed
APT_PACKAGES := ffmpeg espeak-ng festival festvox-kallpc16k festvox-us-slt-hts sox flac

export RAY_AUTH_MODE ?= disabled

.PHONY: env system-deps demo test lint bench examples clean

env: $(STAMP)

# Debian packages: ffmpeg for torchcodec (HF datasets audio decoding) and the ffmpeg fallback decoder;
# espeak-ng, festival and sox regenerate the example corpus and the test audio.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# torch goes first, pinned, so pip takes the local CPU wheel instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,asr]'
	touch $(STAMP)

demo: env
	$(BIN)/stylecaps annotate --config configs/demo.yaml --out runs/demo

test: env
	$(BIN)/python -m pytest tests

lint: env
	$(BIN)/ruff check .

bench: env
	$(BIN)/python bench/pipeline_cpu.py

examples: system-deps
	$(PYTHON) scripts/make_examples.py --out examples

clean:
	rm -rf runs .pytest_cache
