"""Where an arena's answers come from: a local causal LM, or an OpenAI-compatible chat endpoint.

Both stream: `backend.stream(messages, settings, emit, cancelled)` calls `emit(piece)` with each new
piece of text as it is made, checks `cancelled()` between pieces (a closed tab, a new prompt), and
returns (tokens, finished). They block, so they run in the worker pool (labeling.arena_pool), never
on the server's event loop.

    local     prefloop.models.load_causal_lm, loaded once per process and shared by the pool's
              workers (inference only: nothing in the module changes), sampled as prefloop.generation
              samples (pure softmax(z / T), nucleus when top_p < 1), text streamed by a
              transformers streamer, stopped by a stopping criterion when cancelled
    endpoint  POST {base}/chat/completions with "stream": true (vLLM, TGI, llama.cpp's server,
              OpenAI): server-sent events read with httpx; closing the response on cancel closes
              the connection, which stops generation on those servers
"""

from __future__ import annotations

import json
import os
import threading
from typing import Callable, Protocol

from labeling.arena import ModelSpec
from labeling.models import ArenaSettings
from prefloop.errors import InputError

Emit = Callable[[str], None]
Cancelled = Callable[[], bool]
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 120.0  # an endpoint silent this long between tokens has failed


class BackendError(InputError):
    """A model could not answer (endpoint down, HTTP error, model not loadable): one line for the page."""


class Backend(Protocol):
    def stream(self, messages: list[dict], settings: ArenaSettings, emit: Emit,
               cancelled: Cancelled) -> tuple[int, bool]: ...


class LocalBackend:
    """A local model directory, HF id or the embedded default, loaded on first use."""

    def __init__(self, target: str):
        self.target = target
        self._loaded = None
        self._lock = threading.Lock()
        # tokenize_prompts sets the shared tokenizer's padding and truncation sides for its call, and a Rust
        # tokenizer reconfigured by one thread while another encodes fails ("Already borrowed"): one at a time
        self._tokenize = threading.Lock()

    def _model(self):
        with self._lock:  # the first two requests must not load the model twice
            if self._loaded is None:
                # transformers' lazy names, imported here once: two worker threads resolving them at the same
                # moment made one fail ("cannot import name 'GenerationConfig'") in the benchmark
                from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList, TextStreamer

                import prefloop.chat  # noqa: F401 - the prompt renderer, imported before threads race for it
                from prefloop.models import load_causal_lm

                model, tokenizer = load_causal_lm(self.target)
                self._loaded = (model.eval(), tokenizer,
                                (GenerationConfig, StoppingCriteria, StoppingCriteriaList, TextStreamer))
            return self._loaded

    def stream(self, messages, settings, emit, cancelled):
        import torch

        from prefloop.generation import eos_token_ids, tokenize_prompts

        model, tokenizer, classes = self._model()
        GenerationConfig, StoppingCriteria, StoppingCriteriaList, TextStreamer = classes
        device = next(model.parameters()).device
        with self._tokenize:
            ids, mask = tokenize_prompts(tokenizer, [messages], device=device)
        eos = eos_token_ids(model, tokenizer)
        counted = {"tokens": 0, "finished": False}

        class Streamer(TextStreamer):
            def put(self, value):
                if not self.next_tokens_are_prompt:
                    counted["tokens"] += int(value.numel())
                    counted["finished"] = bool(torch.isin(value, torch.tensor(eos)).any())
                super().put(value)

            def on_finalized_text(self, text, stream_end=False):
                if text:
                    emit(text)

        class Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled(), dtype=torch.bool, device=input_ids.device)

        # An explicit config, as prefloop.generation: the checkpoint's own defaults would change the sampling.
        config = GenerationConfig(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                                  max_new_tokens=settings.max_new_tokens, eos_token_id=eos,
                                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0])
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                           streamer=Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                           stopping_criteria=StoppingCriteriaList([Cancel()]))
        return counted["tokens"], counted["finished"]


class EndpointBackend:
    """An OpenAI-compatible chat completions endpoint, streamed; one connection pool per endpoint."""

    def __init__(self, base_url: str, served: str, api_key: str | None = None):
        import httpx

        self.url = f"{base_url}/chat/completions"
        self.served = served
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def stream(self, messages, settings, emit, cancelled):
        import httpx

        body = {"model": self.served, "messages": messages, "stream": True, "max_tokens": settings.max_new_tokens,
                "temperature": settings.temperature, "top_p": settings.top_p}
        tokens, finished = 0, False
        try:
            with self._client.stream("POST", self.url, json=body) as response:
                if response.status_code != 200:
                    detail = response.read().decode(errors="replace").strip().splitlines()
                    raise BackendError(f"{self.served}: HTTP {response.status_code} "
                                       f"({detail[0][:200] if detail else 'no detail'})")
                for line in response.iter_lines():
                    if cancelled():
                        break  # leaving the block closes the connection: the server stops generating
                    piece, reason, done = _sse_piece(line)
                    if done:
                        break
                    if piece:
                        tokens += 1  # one streamed chunk per token on vLLM, TGI and llama.cpp
                        emit(piece)
                    finished = finished or reason == "stop"
        except httpx.HTTPError as err:
            raise BackendError(f"{self.served}: endpoint {self.url} failed ({type(err).__name__}: {err})") from None
        return tokens, finished

    def close(self) -> None:
        self._client.close()


def _sse_piece(line: str) -> tuple[str, str | None, bool]:
    """(text, finish_reason, stream over) of one server-sent-events line of a chat completion stream."""
    if not line.startswith("data:"):
        return "", None, False  # blank separators, comments, event names
    data = line[len("data:"):].strip()
    if data == "[DONE]":
        return "", None, True
    try:
        choice = (json.loads(data).get("choices") or [{}])[0]
    except (ValueError, AttributeError):
        raise BackendError(f"endpoint sent a line that is not a chat completion chunk: {data[:120]!r}") from None
    return str((choice.get("delta") or {}).get("content") or ""), choice.get("finish_reason"), False


class Backends:
    """One backend per registered model target, made on first use and kept for the server's life."""

    def __init__(self):
        self._made: dict[tuple, Backend] = {}
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec, settings: ArenaSettings) -> Backend:
        key = (spec.target, spec.served, settings.api_key_env)
        with self._lock:
            if key not in self._made:
                self._made[key] = self._make(spec, settings)
            return self._made[key]

    @staticmethod
    def _make(spec: ModelSpec, settings: ArenaSettings) -> Backend:
        if not spec.is_endpoint:
            return LocalBackend(spec.target)
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if settings.api_key_env and key is None:
            raise BackendError(f"{spec.name}: ${settings.api_key_env} (the endpoint's API key) is not set")
        return EndpointBackend(spec.target, spec.served or spec.name, key)
