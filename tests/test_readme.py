"""The README's commands, as written, in a fresh directory: from an empty store to aligned models.

The commands are read from README.md's ```bash and ```python blocks, in order, and run
as a new user runs them (console scripts in a shell, cwd = a fresh temporary directory).
What the test adds, and only that:

  * the user's own inputs the README names: prompts.jsonl, guidelines.md, serve.yaml,
    ./my-sft-model, and the passwords `labeling users add` asks for (on stdin);
  * PREFLOOP_CACHE pointing at a cache whose `smollm2-135m-instruct` is the tiny test model
    (prefloop's documented cache variable), so every default model is the tiny one;
  * free ports in place of 7860 and 8080 (other programs may hold those on a shared machine),
    also as `--port` for a `labeling serve` that relies on the default 7860;
  * `--max-new-tokens 8` appended to `labeling generate` (the tiny random model rarely stops
    by itself, and 128 tokens per candidate is minutes on a loaded 2-core machine);
  * the repository's `configs/` (accelerate launch configs) copied beside them, since the README
    runs `accelerate launch --config_file configs/...` from a checkout;
  * `export NAME=VALUE` lines set NAME for the commands after them (each command runs in its
    own shell here, as if typed into one);
  * two blocks are not run here: `dev.py` (it installs everything; dev.py has its own test)
    and the several-processes-on-PostgreSQL block (needs a PostgreSQL server; the store
    tests cover PostgreSQL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOT_RUN = ("python3 dev.py", '--db "$DB"')  # see the module docstring
QUICK = {"labeling generate": " --max-new-tokens 8"}
PASSWORDS = {"alice": "her-password", "boss": "boss-password"}  # the README's API example signs in as alice


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced bash/python block, in document order."""
    return re.findall(r"^```(bash|python)\n(.*?)^```$", text, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, trailing `# comments` dropped."""
    joined = block.replace("\\\n", " ")
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{proc.stderr.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def user_inputs(work: Path, tiny_model_dir: str) -> None:
    """The files a user brings: prompts, guidelines, a model of their own, a serve config."""
    # 8 prompts, of which the export's seeded 10% split holds out two (cycling, camping)
    prompts = [f"Give me one tip about {topic}." for topic in
               ("sleep", "cooking rice", "running", "saving money", "learning French", "writing emails", "cycling",
                "camping")]
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (work / "guidelines.md").write_text("Prefer the response that is correct, useful and kind.\n")
    (work / "serve.yaml").write_text("db: prefloop.db\nproject: chat\n")
    (work / "constitution.md").write_text("Prefer the response that answers the question briefly and kindly.\n")
    # an RFT dataset (`align rloo --prompts tasks.jsonl`): prompt + reference, graded by the mix
    sums = [(a, b) for a in range(2, 6) for b in range(3, 5)]
    (work / "tasks.jsonl").write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "reference": str(a + b)})
                                              + "\n" for a, b in sums))
    shutil.copytree(tiny_model_dir, work / "my-sft-model")
    # the scale-out block runs from a checkout: its `configs/` holds the accelerate launch configs
    shutil.copytree(ROOT / "configs", work / "configs")


def test_readme_commands_run_as_written(tmp_path, tiny_model_dir):
    work = tmp_path / "fresh"
    work.mkdir()
    user_inputs(work, tiny_model_dir)
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "models" / "smollm2-135m-instruct")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFLOOP_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("PREFLOOP_DB", None)
    ports = {"7860": str(free_port()), "8080": str(free_port())}
    servers: list[subprocess.Popen] = []
    ran = []
    try:
        for language, block in readme_blocks((ROOT / "README.md").read_text()):
            if any(marker in block for marker in NOT_RUN):
                continue
            for port, free in ports.items():
                block = block.replace(port, free)
            if language == "python":
                _run([sys.executable, "-c", block], work, env, "README python block")
                ran.append("python block")
                continue
            for command in commands(block):
                if command.startswith("export "):
                    name, value = command[len("export "):].split("=", 1)
                    env[name] = value
                    continue
                command += next((extra for start, extra in QUICK.items() if command.startswith(start)), "")
                if command.startswith("labeling serve"):
                    port = "" if "--port" in command else f" --port {ports['7860']}"
                    servers.append(_serve(command + port, work, env))
                else:
                    user = next((name for name in PASSWORDS if command.startswith(f"labeling users add {name}")), None)
                    stdin = PASSWORDS[user] + "\n" if user else None
                    _run(["bash", "-c", command], work, env, command, stdin)
                ran.append(command.split()[:2])
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    # the path from store to aligned model was walked, not skipped
    words = {" ".join(w) for w in ran if isinstance(w, list)}
    assert {"labeling init", "labeling generate", "labeling tasks", "labeling export", "reward-model train",
            "reward-model eval", "reward-model score", "reward-model prioritize", "align sft", "align ppo",
            "align dpo", "align online-dpo", "labeling simulate", "align grpo", "align rloo",
            "accelerate launch"} <= words, words
    assert "python block" in ran
    assert (work / "runs" / "export" / "pairwise.train.jsonl").exists()
    assert (work / "runs" / "export" / "pairwise.test.jsonl").exists()
    assert (work / "runs" / "export" / "sft.jsonl").exists()
    scored = [json.loads(line) for line in (work / "runs" / "scored.jsonl").read_text().splitlines()]
    assert scored and all(isinstance(row["reward"], float) for row in scored)
    for run in ("sft_quick", "ppo_quick", "dpo_quick", "dpo_online_quick", "grpo_quick", "rloo_quick"):
        out = work / "runs" / run  # the one layout: a final model, its run record, its metrics
        assert (out / "final" / "config.json").exists() and (out / "run.json").exists(), run
        assert (out / "metrics.jsonl").read_text().strip(), run


def _run(argv, work: Path, env: dict, what: str, stdin: str | None = None) -> None:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=900)
    print(f"{time.monotonic() - started:6.1f}s  {what[:110]}")
    assert result.returncode == 0, f"{what}\nexit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def _serve(command: str, work: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    port = re.search(r"--port (\d+)", command).group(1)
    wait_for_http(f"http://127.0.0.1:{port}/", proc)
    print(f"serving  {command}")
    return proc
