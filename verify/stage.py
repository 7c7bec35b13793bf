"""The `verify` stage: the rules verifier, then (backend vllm) the Qwen3 checklist agent, in turn."""

from __future__ import annotations

from typing import ClassVar

from annotate.in_turn import StagesInTurn


class VerifyStage(StagesInTurn):  # fills each caption's verdict: no column of its own
    name: ClassVar[str] = "verify"
