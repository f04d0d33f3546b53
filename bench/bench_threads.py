"""How many threads should torch use for sampling on a CPU, on a machine that other jobs keep busy?

    python bench/bench_threads.py                          # 3 rounds, as is and with 4 busy loops
    python bench/bench_threads.py --rounds 5 --busy 0 4 8 --tokens 32 --batch 8

Each measurement is a fresh process (OpenMP reads OMP_WAIT_POLICY once, at start) that loads the
embedded SmolLM2-135M-Instruct, warms up, and samples `batch` responses of exactly `tokens` tokens
(min_new_tokens = max_new_tokens: every setting does the same work) with prefloop's precision.
The settings: torch.set_num_threads(1), torch's default (one thread per core), and the default with
OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning). A competing load is N
processes spinning in a Python loop. The machine is shared, so the settings run in alternation,
rotating their order each round, and each is reported as a ratio to the default in the same round
and load; the table shows medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # prefloop from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

SECTION = "## CPU threads on a busy machine"

SETTINGS = {"1 thread": ({}, 1), "default threads": ({}, None),
            "default, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None)}
BASELINE = "default threads"


def measure(threads: int | None, tokens: int, batch: int) -> dict:
    """In this process: sampling tokens/s of the embedded model. -> {tokens_per_s, threads}."""
    import torch
    from transformers import GenerationConfig

    from prefloop.generation import tokenize_prompts
    from prefloop.models import load_causal_lm

    # the setting measured, whatever prefloop.hardware would choose under this load
    os.environ["PREFLOOP_CPU_THREADS"] = str(threads or torch.get_num_threads())
    model, tokenizer = load_causal_lm("smollm2-135m-instruct")
    model.eval()
    prompts = [f"Write two sentences about topic number {i}." for i in range(batch)]
    ids, mask = tokenize_prompts(tokenizer, prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def sample(n: int) -> float:
        config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, max_new_tokens=n, min_new_tokens=n,
                                  pad_token_id=pad, use_cache=True)
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        return time.perf_counter() - start

    sample(4)  # warm-up: kernels, allocator
    return {"tokens_per_s": batch * tokens / sample(tokens), "threads": torch.get_num_threads()}


def run_setting(name: str, tokens: int, batch: int) -> float:
    env_extra, threads = SETTINGS[name]
    env = {**os.environ, **env_extra, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", json.dumps([threads, tokens, batch])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 4], help="competing busy loops, per condition")
    parser.add_argument("--tokens", type=int, default=24, help="tokens sampled per response")
    parser.add_argument("--batch", type=int, default=4, help="responses sampled at once")
    parser.add_argument("--no-write", action="store_true", help="print the table only, leave BENCHMARKS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        threads, tokens, batch = json.loads(args.child)
        print(json.dumps(measure(threads, tokens, batch)))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped bench stops its busy loops too (finally)
    os.environ.setdefault("PREFLOOP_CPU_THREADS", str(os.cpu_count()))  # the machine line: torch's default count
    info = machine()
    print(info)
    names = list(SETTINGS)
    speed = {(busy, name): [] for busy in args.busy for name in names}
    ratio = {(busy, name): [] for busy in args.busy for name in names}
    for r in range(args.rounds):
        for busy in args.busy:
            loops = busy_loops(busy)
            try:
                order = names[r % len(names):] + names[:r % len(names)]  # rotate: no setting always goes first
                got = {name: run_setting(name, args.tokens, args.batch) for name in order}
            finally:
                for p in loops:
                    p.kill()
                    p.wait()
            for name in names:
                speed[busy, name].append(got[name])
                ratio[busy, name].append(got[name] / got[BASELINE])
            print(f"round {r + 1}, {busy} busy loops, load {os.getloadavg()[0]:.1f}: "
                  + ", ".join(f"{name} {got[name]:.1f} tok/s" for name in names), flush=True)
    lines = [SECTION, "", f"`python bench/bench_threads.py --rounds {args.rounds} --tokens {args.tokens} --batch "
             f"{args.batch} --busy {' '.join(map(str, args.busy))}` on {info}. Sampling from the embedded model; "
             "each setting a fresh process, in alternation; ratios to torch's default thread count in the same "
             "round and load.", "",
             f"| busy loops | setting | tokens/s (median) | ratio to default (median of {args.rounds}) |",
             "|---|---|---|---|"]
    for busy in args.busy:
        for name in names:
            lines.append(f"| {busy} | {name} | {statistics.median(speed[busy, name]):.1f} | "
                         f"{statistics.median(ratio[busy, name]):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
