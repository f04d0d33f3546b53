"""The command blocks of README.md and of every page of docs/, as written, in one fresh directory.

The pages are read in reading order: README.md, then docs/ in mkdocs.yml's nav. Their ```bash and
```python blocks run in order, as a new user runs them (console scripts in a shell, cwd = a fresh
temporary directory), so a page may build on the pages before it (the docs continue the README's
store). A command that an earlier block already ran, character for character, is not run twice.
Every fenced block must declare its language: `bash` and `python` are commands; `text`, `yaml`,
`nginx` and `json` are not. Two HTML comments right before a block change what happens to it:

  * `<!-- not-run: REASON -->`: the block is not run (it needs a GPU, a PostgreSQL server, hours);
  * `<!-- file: NAME -->`: the block is a file the user writes (my_graders.py): it is saved as NAME.

What the test adds, and only that:

  * the user's own inputs the pages name: prompts.jsonl, guidelines.md, serve.yaml, tasks.jsonl,
    constitution.md, and the passwords `labeling users add` asks for (on stdin);
  * PREFLOOP_CACHE pointing at a cache whose `smollm2-135m-instruct` is the tiny test model
    (prefloop's documented cache variable), so every default model is the tiny one;
  * free ports in place of 7860 and 8080 (other programs may hold those on a shared machine),
    also as `--port` for a `labeling serve` that relies on the default 7860;
  * `--max-new-tokens 8` appended to `labeling generate` (the tiny random model rarely stops
    by itself, and 128 tokens per candidate is minutes on a loaded 2-core machine);
  * the repository's `configs/` (accelerate launch configs) copied beside them, since the docs
    run `accelerate launch --config_file configs/...` from a checkout;
  * `export NAME=VALUE` lines set NAME for the commands after them (each command runs in its
    own shell here, as if typed into one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from doc_blocks import COMMAND_LANGUAGES, Block, blocks, pages

from prefloop.net import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUICK = {"labeling generate": " --max-new-tokens 8"}
PASSWORDS = {"alice": "her-password", "boss": "boss-password"}  # the docs' API example signs in as alice


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, trailing `# comments` dropped."""
    joined = block.replace("\\\n", " ")
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


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


def user_inputs(work: Path) -> None:
    """The files a user brings: prompts, guidelines, a serve config, RFT tasks, a constitution."""
    # 8 prompts, of which the export's seeded 10% split holds out two (cycling, camping)
    prompts = [f"Give me one tip about {topic}." for topic in
               ("sleep", "cooking rice", "running", "saving money", "learning French", "writing emails", "cycling",
                "camping")]
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (work / "guidelines.md").write_text("Prefer the response that is correct, useful and kind.\n")
    (work / "serve.yaml").write_text("store: prefloop.db\nproject: chat\n")
    (work / "constitution.md").write_text("Prefer the response that answers the question briefly and kindly.\n")
    # an RFT dataset (`align rloo --prompts tasks.jsonl`): prompt + reference, graded by the mix
    sums = [(a, b) for a in range(2, 6) for b in range(3, 5)]
    (work / "tasks.jsonl").write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "reference": str(a + b)})
                                              + "\n" for a, b in sums))
    # the scale-out block runs from a checkout: its `configs/` holds the accelerate launch configs
    shutil.copytree(ROOT / "configs", work / "configs")


class Session:
    """One reader's shell: the environment, the servers started, and what has run."""

    def __init__(self, work: Path, env: dict):
        self.work, self.env = work, env
        self.ports = {"7860": str(free_port()), "8080": str(free_port())}
        self.servers: list[subprocess.Popen] = []
        self.ran: list[str] = []  # commands and python blocks, as run (before the port swap)

    def run_block(self, block: Block) -> None:
        if block.file:
            (self.work / block.file).write_text(block.code)
            return
        if block.language == "python":
            if block.code not in self.ran:
                _run([sys.executable, "-c", self._ports(block.code)], self.work, self.env, f"{block.page}:{block.line}")
                self.ran.append(block.code)
            return
        for command in commands(block.code):
            if command in self.ran:
                continue  # an earlier page ran this very command
            self.run_command(command, f"{block.page}:{block.line}")
            self.ran.append(command)

    def run_command(self, command: str, where: str) -> None:
        if command.startswith("export "):
            name, value = command[len("export "):].split("=", 1)
            self.env[name] = value
            return
        line = self._ports(command) + next((extra for start, extra in QUICK.items() if command.startswith(start)), "")
        if command.startswith("labeling serve"):
            port = "" if "--port" in line else f" --port {self.ports['7860']}"
            self.servers.append(_serve(line + port, self.work, self.env))
            return
        user = next((name for name in PASSWORDS if command.startswith(f"labeling users add {name}")), None)
        _run(["bash", "-c", line], self.work, self.env, f"{where}  {command}", PASSWORDS[user] + "\n" if user else None)

    def _ports(self, text: str) -> str:
        for port, free in self.ports.items():
            text = text.replace(port, free)
        return text

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait(timeout=30)


def test_every_command_block_runs_as_written(tmp_path, tiny_model_dir):
    work = tmp_path / "fresh"
    work.mkdir()
    user_inputs(work)
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "models" / "smollm2-135m-instruct")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFLOOP_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("PREFLOOP_DB", None)
    session = Session(work, env)
    try:
        for page in pages():
            for block in blocks(page):
                if block.not_run is None and (block.language in COMMAND_LANGUAGES or block.file):
                    session.run_block(block)
    finally:
        session.close()
    # the path from store to aligned model was walked, not skipped
    words = {" ".join(command.split()[:2]) for command in session.ran}
    assert {"labeling init", "labeling generate", "labeling tasks", "labeling export", "labeling simulate",
            "labeling leaderboard", "reward-model train", "reward-model eval", "reward-model score",
            "reward-model prioritize", "align sft", "align ppo", "align dpo", "align online-dpo", "align grpo",
            "align rloo", "align eval", "align round", "align demo", "accelerate launch"} <= words, words
    assert any("LabelingClient" in ran for ran in session.ran)
    assert (work / "runs" / "export" / "pairwise.train.jsonl").exists()
    assert (work / "runs" / "export" / "pairwise.test.jsonl").exists()
    assert (work / "runs" / "export" / "sft.jsonl").exists()
    scored = [json.loads(line) for line in (work / "runs" / "scored.jsonl").read_text().splitlines()]
    assert scored and all(isinstance(row["reward"], float) for row in scored)
    for run in ("sft_quick", "ppo_quick", "dpo_quick", "ipo_quick", "dpo_online_quick", "grpo_quick", "rloo_quick",
                "grpo_mine"):
        out = work / "runs" / run  # the one layout: a final model, its run record, its metrics
        assert (out / "final" / "config.json").exists() and (out / "run.json").exists(), run
        assert (out / "metrics.jsonl").read_text().strip(), run
    # the user's own grader was called: its mean is logged per step
    assert any("grader/python" in line for line in (work / "runs" / "grpo_mine" / "metrics.jsonl").open())
    assert (work / "runs" / "eval-all" / "eval.json").exists()


def _run(argv, work: Path, env: dict, what: str, stdin: str | None = None) -> None:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=900)
    print(f"{time.monotonic() - started:6.1f}s  {what[:130]}", flush=True)
    assert result.returncode == 0, f"{what}\nexit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def _serve(command: str, work: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    port = re.search(r"--port (\d+)", command).group(1)
    wait_for_http(f"http://127.0.0.1:{port}/", proc)
    print(f"serving  {command}", flush=True)
    return proc
