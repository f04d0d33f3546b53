"""`reward-model serve`: a trained reward model over HTTP, for OpenRLHF, verl or prefloop's own trainers.

    export PREFLOOP_RM_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    reward-model serve --model runs/rm --host 0.0.0.0 --port 5000

Two APIs over one dynamically batched model (reward_model.batching):

  POST /get_reward   OpenRLHF's remote reward model (openrlhf/cli/serve_rm.py; `--remote_rm_url`):
                     {"query": [text, ...], "prompts": [...], "labels": [...]} -> {"rewards": [...],
                     "scores": [...], "extra_logs": {}}. Each query is the rendered prompt + response
                     (OpenRLHF decodes the policy's tokens with their special tokens); rendered with this
                     model's chat template it scores exactly as POST /v1/score. prompts/labels are unused.
  POST /v1/score     {"prompt": conversation or string, "response": string} -> {"reward": r}, or the batch
                     form {"pairs": [{"prompt": ..., "response": ...}, ...]} -> {"rewards": [...]}; with an
                     ensemble (several heads) also "reward_std" / "reward_stds". Rewards are normalised as
                     RewardScorer.score's (mean 0, std 1 on the reference sample).
  GET  /v1/model     what is served (heads, max_length, batching limits); GET /health needs no token.

Every call but /health needs the token: `Authorization: Bearer TOKEN`, or HTTP Basic with the token as
the password, which is what OpenRLHF's client sends for `--remote_rm_url http://rm:TOKEN@host:5000/get_reward`
(aiohttp and requests turn a URL's user:password into that header; OpenRLHF sets no headers itself).
The token comes from --token-file or $PREFLOOP_RM_TOKEN, never from a flag's value (it would show in `ps`);
without one the server is refused, unless --no-auth on a loopback host. Errors are one line:
{"error": "..."} with 400 (bad body), 401 (token), 413 (body too large), 503 (queue full).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import ipaddress
import json
import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from prefloop.config import config_field as _f
from prefloop.config import parse_config
from prefloop.errors import ConfigError

TOKEN_ENV = "PREFLOOP_RM_TOKEN"
MIN_TOKEN_CHARS = 16
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class RMServeConfig:
    """Serve a reward model over HTTP: OpenRLHF's remote reward-model protocol and a JSON API, dynamically batched."""

    model: str = _f("", "reward model to serve: a `reward-model train` run or model directory (required)")
    host: str = _f("127.0.0.1", "interface to listen on (0.0.0.0: every interface)")
    port: int = _f(5000, "TCP port (OpenRLHF's examples use 5000)")
    token_file: str | None = _f(None, f"file whose first line is the bearer token; unset: ${TOKEN_ENV}")
    no_auth: bool = _f(False, "serve without a token; only on a loopback --host (127.0.0.1, ::1, localhost)")
    max_batch: int = _f(32, "pairs scored in one forward pass: requests arriving together are batched up to this")
    batch_wait_ms: float = _f(5.0, "how long the first waiting request waits for others to join its batch")
    max_pairs_per_request: int = _f(1024, "pairs (queries) one request may hold")
    max_body_mb: float = _f(16.0, "request body limit in MiB (a larger body gets 413)")
    max_pending: int = _f(8192, "pairs queued at most; a request beyond it gets 503 (retry later)")
    dtype: str = _f("auto", "weights' dtype: auto (the hardware's precision), float32, bfloat16, float16",
                    choices=DTYPES)
    device: str | None = _f(None, "torch device (cpu, cuda:0, ...); unset: the hardware's")

    def __post_init__(self):
        if not self.model:
            raise ValueError("model is required: a `reward-model train` run or model directory")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: expected 0..65535")
        for name in ("max_batch", "max_pairs_per_request", "max_pending"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.max_body_mb <= 0:
            raise ValueError("batch_wait_ms must be >= 0 and max_body_mb > 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: choose from {', '.join(DTYPES)}")
        if self.no_auth and not is_loopback(self.host):
            raise ValueError(f"no_auth: only on a loopback host, not {self.host!r}; give a token instead")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(cfg: RMServeConfig) -> str | None:
    """The bearer token (None with --no-auth); a missing or weak one is refused with one line."""
    if cfg.no_auth:
        return None
    if cfg.token_file:
        path = Path(cfg.token_file)
        if not path.is_file():
            raise ConfigError(f"token_file {path}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
        token, source = (lines[0].strip() if lines else ""), str(path)
    else:
        token, source = os.environ.get(TOKEN_ENV, "").strip(), f"${TOKEN_ENV}"
        if not token:
            raise ConfigError(f"no token: set ${TOKEN_ENV} or --token-file FILE (or --no-auth on a loopback host)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"token from {source}: {len(token)} characters, at least {MIN_TOKEN_CHARS} needed "
                          "(python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    return token


def authorized(header: str | None, token: str | None) -> bool:
    """`Bearer TOKEN`, or Basic with TOKEN as the password (any user name); compared in constant time."""
    if token is None:
        return True
    scheme, _, value = (header or "").partition(" ")
    given = value.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


# --- request bodies (data: checked here, on the event loop, before anything is queued) -------------

class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _check_message_list(value, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{where}: expected a string or a non-empty list of {{role, content}} messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role", ""), str)):
            raise BadRequest(f"{where}[{i}]: expected {{\"role\": string, \"content\": string}}")
    return [{"role": m.get("role", "user"), "content": m["content"]} for m in value]


def parse_pair(item, where: str) -> tuple:
    """(prompt, response) of one /v1/score pair; prompt a conversation or a string (one user turn)."""
    if not isinstance(item, dict) or "prompt" not in item or "response" not in item:
        raise BadRequest(f"{where}: expected an object with 'prompt' and 'response'")
    prompt, response = item["prompt"], item["response"]
    prompt = prompt if isinstance(prompt, str) else _check_message_list(prompt, f"{where}.prompt")
    response = response if isinstance(response, str) else _check_message_list(response, f"{where}.response")
    return prompt, response


def parse_score_body(body, limit: int) -> tuple[list, list, bool]:
    """(prompts, responses, is_batch) of a POST /v1/score body."""
    if isinstance(body, dict) and "pairs" in body:
        pairs = body["pairs"]
        if not isinstance(pairs, list):
            raise BadRequest("pairs: expected a list of {prompt, response} objects")
        _check_count(len(pairs), limit, "pairs")
        parsed = [parse_pair(p, f"pairs[{i}]") for i, p in enumerate(pairs)]
        return [p for p, _ in parsed], [r for _, r in parsed], True
    prompt, response = parse_pair(body, "body")
    return [prompt], [response], False


def parse_openrlhf_body(body, limit: int) -> list[str]:
    """The `query` texts of an OpenRLHF request ("prompts" and "labels" may come along; they are unused)."""
    if not isinstance(body, dict) or "query" not in body:
        raise BadRequest("body: expected an object with 'query': a list of prompt + response texts")
    query = body["query"]
    if isinstance(query, str):
        query = [query]
    if not isinstance(query, list) or not all(isinstance(q, str) for q in query):
        raise BadRequest("query: expected a list of strings")
    _check_count(len(query), limit, "query")
    return query


def _check_count(n: int, limit: int, name: str) -> None:
    if n > limit:
        raise BadRequest(f"{name}: {n} items, at most {limit} per request (--max-pairs-per-request)", 413)


async def read_json(request, max_bytes: int):
    """The parsed body; 413 past `max_bytes` (checked while reading, not after), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(f"body: {int(declared)} bytes, the limit is {max_bytes} (--max-body-mb)", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(f"body: over {max_bytes} bytes, the limit (--max-body-mb)", 413)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"body: not JSON ({str(err).splitlines()[0][:120]})") from None


# --- the app ------------------------------------------------------------------------------------------

def build_app(batcher, token: str | None, cfg: RMServeConfig):
    """The Starlette app over a running Batcher."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from reward_model.batching import Job, JobError
    from reward_model.scorer import ensemble

    max_bytes = int(cfg.max_body_mb * 1024 * 1024)
    info = {"model": str(cfg.model), "heads": batcher.scorer.n_heads, "max_length": batcher.scorer.max_length,
            "normalised": True, "max_batch": cfg.max_batch, "max_pairs_per_request": cfg.max_pairs_per_request}

    def fail(message: str, status: int) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="reward-model"'} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def answer(payload: dict, numbers: list) -> JSONResponse:
        if not all(math.isfinite(x) for x in numbers):  # JSON has no NaN: say what happened, not a traceback
            return fail("the model produced a non-finite reward", 500)
        return JSONResponse(payload)

    async def scored(request, parse, job_of):
        """Authorize, parse, queue, wait: (what `parse` read, the heads (N, H) or None) or an error response."""
        if not authorized(request.headers.get("authorization"), token):
            return fail("missing or wrong token (Authorization: Bearer TOKEN)", 401)
        try:
            parsed = parse(await read_json(request, max_bytes), cfg.max_pairs_per_request)
        except BadRequest as err:
            return fail(str(err), err.status)
        except ClientDisconnect:  # gone before its body arrived: nobody reads an answer
            return fail("the client disconnected", 400)
        job = job_of(parsed)
        if batcher.busy(len(job)):
            return fail("the server's queue is full; retry later", 503)
        try:
            return parsed, (await batcher.submit(job) if len(job) else None)
        except JobError as err:
            return fail(str(err), 400)
        except RuntimeError as err:
            return fail(str(err), 500)

    async def get_reward(request):
        out = await scored(request, parse_openrlhf_body, lambda texts: Job(texts=texts))
        if isinstance(out, JSONResponse):
            return out
        rewards = ensemble(out[1])[0] if out[1] is not None else []
        return answer({"rewards": rewards, "scores": rewards, "extra_logs": {}}, rewards)

    async def score(request):
        out = await scored(request, parse_score_body, lambda parsed: Job(prompts=parsed[0], responses=parsed[1]))
        if isinstance(out, JSONResponse):
            return out
        (_, _, is_batch), heads = out
        means, stds = ensemble(heads) if heads is not None else ([], [])
        multi = batcher.scorer.n_heads > 1
        if is_batch:
            return answer({"rewards": means, **({"reward_stds": stds} if multi else {})}, means + stds)
        return answer({"reward": means[0], **({"reward_std": stds[0]} if multi else {})}, means + stds)

    async def model_info(request):
        if not authorized(request.headers.get("authorization"), token):
            return fail("missing or wrong token (Authorization: Bearer TOKEN)", 401)
        return JSONResponse({**info, "batches": batcher.batches, "pairs": batcher.pairs})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def http_error(request, exc):
        return fail(str(exc.detail), exc.status_code)

    routes = [Route("/get_reward", get_reward, methods=["POST"]), Route("/v1/score", score, methods=["POST"]),
              Route("/v1/model", model_info, methods=["GET"]), Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def load_scorer(cfg: RMServeConfig):
    import torch

    from reward_model.scorer import RewardScorer

    dtype = None if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    return RewardScorer.from_pretrained(cfg.model, device=cfg.device, batch_size=cfg.max_batch, dtype=dtype)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that SIGTERM or Ctrl+C, after the graceful shutdown, ends in exit 0 (as
        `labeling serve` does): uvicorn raises the signal again once stopped, which killed the process
        before the worker thread was joined, with status -15."""

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from labeling.serve import _check_port_free  # the one "is this port free" check, shared with `labeling serve`
    from reward_model.batching import Batcher

    cfg = parse_config(RMServeConfig, argv, prog="reward-model serve")
    token = read_token(cfg)
    _check_port_free(cfg.host, cfg.port)
    scorer = load_scorer(cfg)
    batcher = Batcher(scorer, cfg.max_batch, cfg.batch_wait_ms / 1000, cfg.max_pending)
    app = build_app(batcher, token, cfg)
    auth = "no token (--no-auth, loopback only)" if token is None else "bearer token required"
    print(f"[reward-model] serving {cfg.model} on http://{cfg.host}:{cfg.port} ({auth}): "
          f"POST /get_reward (OpenRLHF), POST /v1/score, GET /v1/model", flush=True)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
    server = _server_class()(config)
    try:
        server.run()  # returns on SIGINT/SIGTERM, after requests in flight finish
    finally:
        batcher.close()
    return 0


if __name__ == "__main__":
    from prefloop.cli import run_main

    sys.exit(run_main(main, sys.argv[1:], "reward-model serve"))
