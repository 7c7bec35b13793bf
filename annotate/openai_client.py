"""A chat-completions client for any OpenAI-compatible server (`vllm serve`, a hosted API), as the
`openai` captioner and verifier use it: bounded concurrency, answers in request order, and our own retry
policy (the SDK's is turned off, so that there is one policy and one place that logs it).

Retried, with exponential backoff and jitter, up to `max_retries` times: 429 (rate limited), 5xx,
timeouts and connection errors. Any other error (400, 401, 404: a request that would fail again) is
raised at once. When one request has failed for good, the batch fails: requests not yet sent are not
sent, and those in flight make no further retries.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Annotated, Any

from pydantic import Field

from annotate.base import StrictConfig

log = logging.getLogger(__name__)


class OpenAIEndpointConfig(StrictConfig):
    base_url: str = Field(min_length=1, description="The server's OpenAI API root, e.g. http://host:8000/v1.")
    model: str = Field(min_length=1, description="The served model name (what captions and verdicts record).")
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the API key (never the key itself); 'EMPTY' if unset.",
    )
    max_concurrency: Annotated[int, Field(ge=1)] = Field(default=8, description="Requests in flight at most.")
    timeout_s: Annotated[float, Field(gt=0)] = Field(default=120.0, description="Per request and attempt.")
    max_retries: Annotated[int, Field(ge=0)] = Field(
        default=5, description="Retries of a request that got 429, 5xx, a timeout or a connection error."
    )
    backoff_s: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="Wait before retry r (from 0): backoff_s * 2^r, times a jitter in [0.5, 1]."
    )

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env) or "EMPTY"


def retriable(error: BaseException) -> bool:
    """Whether a failed request may succeed if sent again: rate limits, server errors, the network."""
    import openai

    if isinstance(error, openai.RateLimitError | openai.APITimeoutError | openai.APIConnectionError):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


class ChatClient:
    """`chat.completions.create` for many requests at once; built in a stage's `setup`."""

    def __init__(self, config: OpenAIEndpointConfig) -> None:
        self.config = config
        self._client: Any = None  # the openai.OpenAI client, between setup and close

    def setup(self) -> None:
        from openai import OpenAI

        config = self.config
        self._client = OpenAI(
            base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s, max_retries=0
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def complete_all(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Each request's ChatCompletion, in the requests' order, at most `max_concurrency` in flight;
        raises the error of a request that failed after its retries."""
        if self._client is None:
            raise RuntimeError("ChatClient.setup() was not called")
        if not requests:
            return []
        failed = threading.Event()
        workers = min(len(requests), self.config.max_concurrency)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-chat")
        try:
            futures = [pool.submit(self._complete, request, failed) for request in requests]
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:  # the first failure in request order, if any
                error = future.exception() if future.done() else None
                if error is not None:
                    raise error
            return [future.result() for future in futures]
        except BaseException:
            failed.set()  # requests in flight stop retrying; those not started are cancelled
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, request: dict[str, Any], failed: threading.Event) -> Any:
        config = self.config
        for retry in range(config.max_retries + 1):
            if failed.is_set():
                raise RuntimeError("not sent: another request of the batch failed")
            try:
                return self._client.chat.completions.create(**request)
            except Exception as error:
                if retry == config.max_retries or not retriable(error):
                    raise
                delay = config.backoff_s * 2**retry * random.uniform(0.5, 1.0)
                log.warning(
                    "chat completion failed (%s: %s); retry %d of %d in %.1f s",
                    type(error).__name__,
                    " ".join(str(error).split())[:200],
                    retry + 1,
                    config.max_retries,
                    delay,
                )
                if failed.wait(delay):  # another request failed for good: no point retrying this one
                    raise
        raise AssertionError("unreachable")
