"""The `vllm` verifier: Qwen3 answers a versioned checklist about each caption, in-process under vLLM.

Every caption to check becomes one chat (system: the checklist's instructions and numbered items; user:
the caption, and the segment's transcript so that quoted words can be spotted), and all chats of a batch
go to the engine in one call. The answer is JSON constrained by the checklist's verdict schema
(verify/checklist.py); an answer that still does not validate (cut off at max_tokens, say) is asked
again, only for those captions, with a new seed, and after `max_attempts` the caption is rejected as
`verifier_output_invalid`. Seeds depend on the attempt alone, never on a caption's place in the batch,
so a caption's verdict does not depend on the batch size.

Verdicts: a caption already rejected (by the captioner or the rules verifier, which runs first) is not
sent when `skip_rejected`; one already passed gets the LLM's failures added to its verdict.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, ValidationError, field_validator

from annotate.base import BatchStage, Row, StrictConfig
from annotate.llm_engine import VllmEngineConfig
from verify.checklist import Checklist, load_checklist, verdict_model

DEFAULT_CHECKLIST = Path(__file__).resolve().parents[1] / "configs/checklists/fcaps-v1.yaml"
OUTPUT_INVALID = "verifier_output_invalid"
_THINK_END = "</think>"


class VerifierSettings(StrictConfig):
    """What the LLM checklist verifier asks and how, whichever backend runs the model."""

    checklist: Path = Field(default=DEFAULT_CHECKLIST, description="The checklist YAML file.")
    thinking: bool = Field(
        default=False,
        description="Qwen3 thinks before it answers (enable_thinking); the JSON is constrained after it.",
    )
    max_tokens: Annotated[int, Field(ge=1)] = 512
    temperature: Annotated[float, Field(ge=0)] = Field(default=0.0, description="0: greedy.")
    retry_temperature: Annotated[float, Field(gt=0)] = Field(
        default=0.7, description="Temperature of the attempts after the first: a greedy retry would repeat."
    )
    seed: Annotated[int, Field(ge=0)] = Field(default=0, description="Attempt a is seeded seed + a.")
    max_attempts: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Answers that are not a valid verdict are asked again up to this many times."
    )
    skip_rejected: bool = Field(
        default=True, description="Captions already rejected (by the rules verifier) keep their verdict."
    )

    @field_validator("checklist")
    @classmethod
    def _checklist_loads(cls, path: Path) -> Path:
        load_checklist(path)  # a bad checklist is a config error, not a failure of the first batch
        # Ray workers do not share the driver's working directory: a relative path would not be found.
        return path.resolve()


class VllmVerifierConfig(VerifierSettings):
    engine: VllmEngineConfig


@dataclass(frozen=True)
class Judgement:
    """The LLM's last answer about one caption: the JSON part (`answer`), the thinking before it (if
    any), the verdict it validates to (None if it does not) and why not, and the attempts it took."""

    answer: str
    thinking: str | None
    verdict: BaseModel | None
    error: str | None
    attempts: int


def split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, answer) of a thinking model's output: the answer follows the last </think>; output
    whose thinking never ended has no answer."""
    head, end, answer = text.rpartition(_THINK_END)
    if not end:
        return text.strip(), ""
    return head.replace("<think>", "").strip(), answer.strip()


def merge_verdicts(earlier: dict[str, Any] | None, llm: dict[str, Any]) -> dict[str, Any]:
    """The LLM's verdict added to an earlier one (the rules verifier's): failures of both, authors joined."""
    if earlier is None:
        return llm
    return {
        "passed": earlier["passed"] and llm["passed"],
        "failed_checks": [*earlier["failed_checks"], *llm["failed_checks"]],
        "reasons": [*earlier["reasons"], *llm["reasons"]],
        "verifier": f"{earlier['verifier']}+{llm['verifier']}",
    }


class LlmVerifier(BatchStage):  # fills each caption's verdict: no column of its own
    name: ClassVar[str] = "verify"

    def __init__(self, config: VllmVerifierConfig) -> None:
        self.config = config
        self.checklist: Checklist = load_checklist(config.checklist)
        self.verdict_type = verdict_model(self.checklist)
        self.verifier = (
            f"vllm:{config.engine.model_id}|{self.checklist.version_id}|{self.checklist.content_hash}"
        )
        self.llm: Any = None  # the vllm.LLM engine, between setup and teardown
        self.last_conversations = 0  # chats sent to the engine for the last batch, all attempts
        self._system = system_prompt(self.checklist)
        self._schema = self.verdict_type.model_json_schema()

    def setup(self) -> None:
        # Without disable_any_whitespace a model may pad the JSON with whitespace up to max_tokens.
        structured: dict[str, Any] = {"backend": "xgrammar", "disable_any_whitespace": True}
        if self.config.thinking:
            # The reasoning parser lets the model think freely; the grammar applies after </think>.
            structured["reasoning_parser"] = "qwen3"
        self.llm = self.config.engine.build(structured_outputs_config=structured)

    def teardown(self) -> None:
        self.llm = None  # the engine's last reference: collecting it frees its memory
        gc.collect()

    def __call__(self, rows: list[Row]) -> list[Row]:
        targets = [
            (row_index, caption_index)
            for row_index, row in enumerate(rows)
            for caption_index, caption in enumerate(row.get("captions") or [])
            if self._wants(caption)
        ]
        judgements = self.judge(
            [(rows[r]["captions"][c]["text"], rows[r].get("transcript")) for r, c in targets]
        )
        verdicts: dict[int, dict[int, dict[str, Any]]] = {}  # row index -> caption index -> LLM verdict
        for (row_index, caption_index), judgement in zip(targets, judgements, strict=True):
            verdicts.setdefault(row_index, {})[caption_index] = self.verdict(judgement)
        return [_with_verdicts(row, verdicts.get(row_index, {})) for row_index, row in enumerate(rows)]

    def _wants(self, caption: dict[str, Any]) -> bool:
        verdict = caption.get("verdict")
        return not (self.config.skip_rejected and verdict is not None and not verdict["passed"])

    def judge(self, captions: list[tuple[str, str | None]]) -> list[Judgement]:
        """The LLM's judgement of each (caption text, transcript or None), answers that do not validate
        asked again (those alone, in one call per attempt) up to `max_attempts` times."""
        conversations = [self.messages(text, transcript) for text, transcript in captions]
        judgements: dict[int, Judgement] = {}  # by caption index, the latest attempt's
        pending = list(range(len(conversations)))
        self.last_conversations = 0
        for attempt in range(self.config.max_attempts):
            if not pending:
                break
            answers = self._ask([conversations[i] for i in pending], attempt)
            self.last_conversations += len(pending)
            for index, answer in zip(pending, answers, strict=True):
                judgements[index] = self._parse(answer, attempt + 1)
            pending = [i for i in pending if judgements[i].verdict is None]
        return [judgements[i] for i in range(len(conversations))]

    def _ask(self, conversations: list[list[dict[str, str]]], attempt: int) -> list[str]:
        """The model's raw output for each conversation (thinking included), in order."""
        outputs = self.llm.chat(
            conversations,
            self._sampling(attempt),
            chat_template_kwargs={"enable_thinking": self.config.thinking},
            use_tqdm=False,
        )
        return [output.outputs[0].text for output in outputs]

    def messages(self, text: str, transcript: str | None) -> list[dict[str, str]]:
        """The chat about one caption."""
        user = f"Caption: {text}"
        if transcript is not None:
            user += f"\nTranscript of the segment: {transcript}"
        return [{"role": "system", "content": self._system}, {"role": "user", "content": user}]

    def _sampling(self, attempt: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        config = self.config
        return SamplingParams(
            temperature=config.temperature if attempt == 0 else config.retry_temperature,
            seed=config.seed + attempt,
            max_tokens=config.max_tokens,
            structured_outputs=StructuredOutputsParams(json=self._schema),
        )

    def _parse(self, text: str, attempts: int) -> Judgement:
        thinking, answer = split_thinking(text) if self.config.thinking else (None, text.strip())
        try:
            verdict = self.verdict_type.model_validate_json(answer)
        except ValidationError as error:
            problem = " ".join(str(error.errors()[0]["msg"]).split())
            return Judgement(answer, thinking, None, problem, attempts)
        return Judgement(answer, thinking, verdict, None, attempts)

    def verdict(self, judgement: Judgement) -> dict[str, Any]:
        """A caption's verdict (VERDICT_TYPE) from the LLM's judgement of it.

        passed means no item failed: the items decide, and the model's own overall `passed` is ignored
        where it disagrees with them. It is not recorded either, since reasons pair one to one with
        failed checks (pipeline/check.py zips them).
        """
        if judgement.verdict is None:
            why = f"no valid verdict in {judgement.attempts} attempts ({judgement.error})"
            return self._verdict_of([OUTPUT_INVALID], [f"{OUTPUT_INVALID}: {why}"])
        answers = {item_id: getattr(judgement.verdict, item_id) for item_id in self.checklist.item_ids}
        failed = [item_id for item_id, answer in answers.items() if answer.failed]
        reasons = [f"{item_id}: {answers[item_id].reason or 'no reason given'}" for item_id in failed]
        return self._verdict_of(failed, reasons)

    def _verdict_of(self, failed: list[str], reasons: list[str]) -> dict[str, Any]:
        return {"passed": not failed, "failed_checks": failed, "reasons": reasons, "verifier": self.verifier}


def system_prompt(checklist: Checklist) -> str:
    items = "\n".join(f"{n}. {item.id}: {item.question}" for n, item in enumerate(checklist.items, 1))
    return f"{checklist.instructions.strip()}\n\nItems:\n{items}"


def _with_verdicts(row: Row, verdicts: dict[int, dict[str, Any]]) -> Row:
    """The row with the LLM's verdicts (by caption index) merged into those of the captions checked."""
    if not verdicts:
        return row
    captions = [
        {**caption, "verdict": merge_verdicts(caption.get("verdict"), verdicts[index])}
        if index in verdicts
        else caption
        for index, caption in enumerate(row["captions"])
    ]
    return {**row, "captions": captions}
