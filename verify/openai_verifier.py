"""The `openai` verifier: the `vllm` verifier's checklist agent with the model behind an OpenAI-compatible
server (`vllm serve` of a Qwen3, say), for a model too big to run beside the pipeline or shared by runs.

It is LlmVerifier (verify/llm_verifier.py) with the engine swapped for a ChatClient: the same chats
(checklist system prompt, caption and transcript), the same verdict model and its JSON schema, the same
attempts (temperature, then retry_temperature; seed + attempt; up to max_attempts, then
`verifier_output_invalid`), the same skips and merges with an earlier verdict. Only the verifier
string names the backend: `openai:{served model}|{checklist version}|{checklist hash}`.

The schema goes as `response_format` json_schema (strict), which vLLM serve turns into the same
constrained decoding the in-process engine does. Server flags that the in-process verifier sets on its
engine belong on the server here: `--structured-outputs-config '{"backend": "xgrammar",
"disable_any_whitespace": true}'` (without it a model may pad the JSON with whitespace up to
max_tokens), and with `thinking`, `--reasoning-parser qwen3` so that the model thinks freely and the
schema applies after </think>; the thinking then comes back apart from the answer and is joined to it
again here, so that answers are parsed as the in-process ones are.
"""

from __future__ import annotations

from typing import Any

from annotate.openai_client import ChatClient, OpenAIEndpointConfig
from verify.checklist import load_checklist, verdict_model
from verify.llm_verifier import LlmVerifier, VerifierSettings, system_prompt


class OpenAIVerifierConfig(VerifierSettings):
    """The server in place of the vllm backend's `engine`."""

    endpoint: OpenAIEndpointConfig


class OpenAIVerifier(LlmVerifier):
    """LlmVerifier's rows, skips, chats, parsing and verdicts; its `judge` sends the chats to a server."""

    config: OpenAIVerifierConfig  # type: ignore[assignment]

    def __init__(self, config: OpenAIVerifierConfig) -> None:  # LlmVerifier's, with no engine config
        self.config = config
        self.checklist = load_checklist(config.checklist)
        self.verdict_type = verdict_model(self.checklist)
        self.verifier = (
            f"openai:{config.endpoint.model}|{self.checklist.version_id}|{self.checklist.content_hash}"
        )
        self.client = ChatClient(config.endpoint)
        self.llm = None  # no engine in this process
        self.last_conversations = 0  # chats sent for the last batch, all attempts
        self._system = system_prompt(self.checklist)
        self._schema = self.verdict_type.model_json_schema()

    def setup(self) -> None:
        self.client.setup()

    def teardown(self) -> None:
        self.client.close()

    def _ask(self, conversations: list[list[dict[str, str]]], attempt: int) -> list[str]:
        """LlmVerifier's judging loop, its chats sent to the server."""
        sampling = self._sampling(attempt)
        responses = self.client.complete_all(
            [{"messages": messages, **sampling} for messages in conversations]
        )
        return [self._output_text(response.choices[0].message) for response in responses]

    def _sampling(self, attempt: int) -> dict[str, Any]:
        """An attempt's request settings (all but the messages): LlmVerifier._sampling's, as a request."""
        config = self.config
        return {
            "model": config.endpoint.model,
            "temperature": config.temperature if attempt == 0 else config.retry_temperature,
            "seed": config.seed + attempt,
            "max_tokens": config.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": self.verdict_type.__name__, "schema": self._schema, "strict": True},
            },
            "extra_body": {"chat_template_kwargs": {"enable_thinking": config.thinking}},
        }

    def _output_text(self, message: Any) -> str:
        """The model's output as the in-process engine returns it: a server's reasoning parser hands the
        thinking back apart (`reasoning`, or `reasoning_content` on older servers); it is put back in
        front of the answer, for `_parse` to split off again."""
        content = message.content or ""
        if not self.config.thinking:
            return content
        reasoning = getattr(message, "reasoning", None) or getattr(message, "reasoning_content", None)
        return f"<think>{reasoning}</think>{content}" if reasoning else content
