"""Arena benchmark: time to first token and tokens/s per session at 1, 4 and 8 concurrent arena sessions.

    python bench/bench_arena.py                   # embedded SmolLM2-135M, local + llama.cpp server, writes "## Arena"
    python bench/bench_arena.py --quick           # a tiny random model, local only, nothing written

A session is what one annotator's Send starts: a Battle of two answers (labeling.arena_pool, the code
the page runs) to its own prompt, A and B from the arena's two models, both the embedded SmolLM2-135M-
Instruct reached one way: `local` (transformers in the server's worker pool, `labeling serve
--arena-workers`, default 4) or `endpoint` (llama-cpp-python's OpenAI-compatible server on the embedded
GGUF, streamed over HTTP). S sessions start together; per answer, time to first token counts from the
Send (queue wait included: what the annotator waits) and tokens/s from the first token to the last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import machine, write_section

SECTION = "## Arena"
PROMPTS = ["Explain why the sky is blue.", "Write a short poem about rain.", "How do I boil an egg?",
           "Give three tips for learning a language.", "What is a prime number?", "Describe a cat to a child.",
           "Why do we sleep?", "Name the planets of the solar system."]


def run_sessions(backends, target: str, sessions: int, workers: int, max_new_tokens: int) -> dict:
    """`sessions` Battles started together on a fresh pool of `workers`; `backends` is kept across runs, so
    that the local model loads once, as in a server."""
    from labeling.arena import ModelSpec
    from labeling.arena_pool import Battle, GenerationPool
    from labeling.models import ArenaSettings

    specs = [ModelSpec(name=f"m{i}", target=target, served="smollm2") for i in range(2)]
    settings = ArenaSettings(project_id=0, models=[s.as_dict() for s in specs], max_new_tokens=max_new_tokens,
                             temperature=0.7, top_p=1.0)
    pool = GenerationPool(workers, idle_cancel_s=3600)
    start = time.monotonic()
    battles = [Battle.start(pool, backends, settings, PROMPTS[i % len(PROMPTS)], specs[0], specs[1])
               for i in range(sessions)]
    while not all(b.done for b in battles):
        for b in battles:
            b.touch()
        time.sleep(0.02)
    wall = time.monotonic() - start
    jobs = [job for b in battles for job in b.jobs]
    if errors := [job.error or "an empty answer" for job in jobs if job.error or job.first_token is None]:
        raise SystemExit(f"bench_arena: generation failed: {errors[0]}")
    ttft = [job.first_token - start for job in jobs]
    rate = [job.result[0] / max(job.ended - job.first_token, 1e-9) for job in jobs]
    tokens = sum(job.result[0] for job in jobs)
    return {"sessions": sessions, "ttft_median": statistics.median(ttft), "ttft_max": max(ttft),
            "rate_median": statistics.median(rate), "rate_min": min(rate), "tokens": tokens,
            "total_rate": tokens / wall, "wall": wall}


def main() -> int:
    import torch

    from labeling.arena_backends import Backends

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random model, local only, nothing written")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--backends", nargs="+", default=["local", "endpoint"], choices=["local", "endpoint"])
    parser.add_argument("--workers", type=int, default=4, help="the pool's size (labeling serve --arena-workers)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each size; the table gives medians")
    parser.add_argument("--threads", type=int, default=2, help="torch threads here, and llama.cpp's threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backends = Backends()
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in (["local"] if args.quick else args.backends):
            target, stop = _target(backend, Path(tmp), args)
            try:
                run_sessions(backends, target, 1, args.workers, 16)  # warm up: load the model, open the pool
                runs = {s: [] for s in args.sessions}
                for _ in range(args.rounds):  # rounds alternate, so a burst of other jobs' load hits every size alike
                    for s in args.sessions:
                        runs[s].append(run_sessions(backends, target, s, args.workers, args.max_new_tokens))
                        print(f"[bench] {backend}: {runs[s][-1]}", flush=True)
                rows += [{"backend": backend, "sessions": s,
                          **{k: statistics.median(r[k] for r in results) for k in results[0] if k != "sessions"}}
                         for s, results in runs.items()]
            finally:
                stop()
    text = report(rows, args, load)
    print(text)
    if not args.quick:
        write_section(SECTION, text)
    return 0


def _target(backend: str, tmp: Path, args):
    if backend == "local":
        if args.quick:
            from prefloop.testing import build_tiny_causal_lm

            return str(build_tiny_causal_lm(tmp / "tiny")), lambda: None
        from prefloop.models import resolve_model

        return resolve_model(), lambda: None
    from _labeling_seed import free_port
    from llama_server import start_llama_server, stop

    url, proc = start_llama_server(free_port(), tmp / "llama.log", threads=args.threads)
    return url, lambda: stop(proc)


def report(rows: list[dict], args, load: float) -> str:
    lines = [SECTION, "",
             f"`python bench/bench_arena.py` — both arena models are the embedded SmolLM2-135M-Instruct; each session "
             f"is one Send (two answers of up to {args.max_new_tokens} tokens, T=0.7, to its own prompt); all sessions "
             f"start at once. `local`: transformers in the arena pool of {args.workers} workers, {args.threads} torch "
             f"threads; `endpoint`: llama-cpp-python 0.3.36's server on the Q4_1 GGUF ({args.threads} threads, "
             "--interrupt_requests False), streamed over HTTP. Time to first token counts from the Send (queue wait "
             "included); tokens/s per "
             f"answer from its first token to its last. Each cell: the median over {args.rounds} alternating rounds.",
             f"Machine: {machine()}; load average {load:.1f} when the run began (a shared machine: other jobs ran).",
             "", "| backend | sessions | answers | first token, median s | first token, slowest s | "
             "tokens/s per answer, median | slowest answer tokens/s | all answers tokens/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['sessions']} | {2 * r['sessions']} | {r['ttft_median']:.2f} | "
                     f"{r['ttft_max']:.2f} | {r['rate_median']:.1f} | {r['rate_min']:.1f} | {r['total_rate']:.1f} |")
    lines += ["", "Reading it: a session is two answers, so 4 and 8 sessions ask for 8 and 16 answers at once. Locally "
              "the pool runs 4 of them at a time on the machine's 2 cores: the others wait in the queue (the page "
              "shows their place) and their first token comes late, while those running share the cores, so each "
              "answer slows and the total stays what the machine gives. llama-cpp-python's server generates one "
              "request at a time (with --interrupt_requests False the others queue there), so every answer but the "
              "first waits too, at the server. On this CPU the Q4_1 GGUF under llama.cpp is about five times faster"
              " per answer than transformers in bf16. A production arena wants an endpoint that batches concurrent "
              "requests (vLLM, TGI), or more cores."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
