"""Reward-model server benchmark: pairs/s through `reward-model serve` against in-process RewardScorer.

    python bench/bench_rm_server.py                  # SmolLM2-135M + reward head, writes "## Reward-model server"
    python bench/bench_rm_server.py --quick          # tiny model, smoke run (nothing written)

The same reward model (the embedded SmolLM2-135M-Instruct with a fresh reward head: the shape and cost of
a real one; an untrained head scores as fast as a trained one) is served by `reward-model serve` in its
own process and loaded in this one. C concurrent clients (1, 8, 32) each send OpenRLHF-style requests of
one query (POST /get_reward, as OpenRLHF's single-turn executor does), the next as soon as the last is
answered, until P pairs are scored. In-process, the same P rendered texts are scored by RewardScorer
(a) in batches of C (the batch a server with C clients can form at best: the ratio is the cost of HTTP,
JSON and queueing) and (b) in batches of the server's --max-batch (what a trainer holding all its pairs
does: the ratio the target >= 0.8x at saturation refers to). The machine is shared, so runs alternate (in-process,
server, in-process, server ...) and each row gives the median of its rounds; pairs per CPU-second (the
scoring process's user + system time; the server's read from /proc) is steadier than wall-clock here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_env, machine, write_section

SECTION = "## Reward-model server"
TOKEN = "bench-token-0123456789abcdef"
WORDS = ("the answer is clear and short but it explains why each step holds and what the reader should check next "
         "before trusting a number from a model that was trained on comparisons made by people").split()


def build_model(out: Path, quick: bool) -> Path:
    from prefloop.testing import build_tiny_causal_lm
    from reward_model.artifact import save_reward_model
    from reward_model.backbone import load_backbone

    backbone = str(build_tiny_causal_lm(out.parent / "tiny-lm")) if quick else None  # None: embedded SmolLM2
    model, tokenizer = load_backbone(backbone, n_heads=1, seed=0)
    return save_reward_model(model, tokenizer, out, {"base_model": backbone or "smollm2-135m-instruct",
                                                     "trained": False, "max_length": 1024})


def workload(tokenizer, n: int) -> list[str]:
    """n rendered prompt + response texts, ~20-token prompts and 40-80-word answers, as OpenRLHF sends them."""
    import random

    rng = random.Random(0)
    texts = []
    for i in range(n):
        prompt = f"Question {i}: explain in a few sentences how to {rng.choice(WORDS)} the {rng.choice(WORDS)}."
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 80))) + "."
        texts.append(tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                                    {"role": "assistant", "content": answer}], tokenize=False))
    return texts


def in_process(scorer, texts: list[str], batch: int) -> dict:
    scorer.batch_size = batch
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), batch):  # one call per batch, as a trainer scoring its rollouts does
        chunk = texts[start:start + batch]
        scorer.normalise(scorer.raw_scores_of_ids(scorer.encode_texts(chunk)))
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def through_server(url: str, pid: int, texts: list[str], clients: int) -> dict:
    import httpx

    queue = list(reversed(texts))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        async def worker():
            while queue:
                text = queue.pop()
                response = await client.post("/get_reward", json={"query": [text], "prompts": [""], "labels": [""]})
                response.raise_for_status()

        before = (await client.get("/v1/model")).json()
        cpu, wall = process_cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall, cpu = time.perf_counter() - wall, process_cpu_seconds(pid) - cpu
        after = (await client.get("/v1/model")).json()
        batch = (after["pairs"] - before["pairs"]) / (after["batches"] - before["batches"])
        return {"wall": wall, "cpu": cpu, "batch": batch}


def start_server(model: Path, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    import httpx

    from prefloop.net import free_port

    port = free_port()
    env = child_env(threads=threads, PREFLOOP_RM_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "reward_model.cli", "serve", "--model", str(model), "--port",
                             str(port), "--max-batch", str(max_batch)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("bench: the server did not start")


def main() -> int:
    import torch

    from reward_model.scorer import RewardScorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few pairs, nothing written")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per row")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in each process (1: on a loaded shared machine, 2 OpenMP threads that "
                             "wait for each other made a small model's forward several times slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = {c: (16 if args.quick else min(max(16, 4 * c), 3 * args.max_batch)) for c in args.clients}

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "rm", args.quick)
        scorer = RewardScorer.from_pretrained(model_dir)
        texts = workload(scorer.tokenizer, max(pairs.values()))
        proc, url = start_server(model_dir, args.max_batch, args.threads)
        try:
            asyncio.run(through_server(url, proc.pid, texts[:args.max_batch], args.max_batch))  # warm both up
            in_process(scorer, texts[:args.max_batch], args.max_batch)
            rows = [measure(scorer, url, proc.pid, texts[:pairs[c]], c, args) for c in args.clients]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    shape = "tiny random Llama" if args.quick else "SmolLM2-135M-Instruct + reward head"
    text = report(rows, shape, args, torch.get_num_threads())
    print(text)
    if not args.quick:
        write_section(SECTION, text)
    return 0


def measure(scorer, url: str, pid: int, texts: list[str], clients: int, args) -> dict:
    runs = {"same": [], "best": [], "server": []}
    for _ in range(args.rounds):  # alternate, so a burst of other jobs' load hits every variant alike
        runs["same"].append(in_process(scorer, texts, clients))
        runs["server"].append(asyncio.run(through_server(url, pid, texts, clients)))
        runs["best"].append(in_process(scorer, texts, args.max_batch))
    n = len(texts)
    out = {"clients": clients, "pairs": n}
    for name, results in runs.items():
        out[f"{name}_wall"] = statistics.median(n / r["wall"] for r in results)
        out[f"{name}_cpu"] = statistics.median(n / max(r["cpu"], 1e-9) for r in results)
    out["ratios_best"] = [b["wall"] / s["wall"] for s, b in zip(runs["server"], runs["best"])]
    out["server_batch"] = statistics.mean(r["batch"] for r in runs["server"])  # pairs per forward it formed
    print(f"[bench] {clients} clients: {out}", flush=True)
    return out


def report(rows: list[dict], shape: str, args, threads: int) -> str:
    b = args.max_batch
    lines = [SECTION, "",
             f"`python bench/bench_rm_server.py` — {shape}, the default precision, {threads} torch thread(s) in "
             f"each process; the server runs `reward-model serve --max-batch {b}` (5 ms gathering window), each "
             "client sends one query per POST /get_reward (OpenRLHF's protocol) and the next when it is answered. "
             f"In-process: RewardScorer on the same rendered texts in batches of C (as many as there are clients) "
             f"and of {b} (the server's largest). Median of {args.rounds} alternating rounds (in-process C, server, "
             f"in-process {b}); pairs per CPU-second count the scoring process alone (user + system time).",
             f"Machine: {machine()} (shared with other engineers' jobs while this ran).", "",
             f"| clients | pairs | server pairs/s | pairs per forward (server) | in-process batch C pairs/s | "
             f"in-process batch {b} pairs/s | server / batch C | server / batch {b} (each round) | "
             f"server pairs/CPU-s | in-process batch {b} pairs/CPU-s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        each = ", ".join(f"{x:.2f}" for x in r["ratios_best"])
        lines.append(f"| {r['clients']} | {r['pairs']} | {r['server_wall']:.2f} | {r['server_batch']:.1f} | "
                     f"{r['same_wall']:.2f} | {r['best_wall']:.2f} | {r['server_wall'] / r['same_wall']:.2f}x | "
                     f"{r['server_wall'] / r['best_wall']:.2f}x ({each}) | {r['server_cpu']:.2f} | "
                     f"{r['best_cpu']:.2f} |")
    lines += ["", "Reading it: one client gets batches of one pair, so it runs at in-process batch-1 speed less the "
              "HTTP round trip; with many clients the worker takes whatever queued while the previous forward ran "
              "(the pairs-per-forward column), so at saturation the clients split into groups that alternate, and "
              "the forward pass, not HTTP, JSON or the queue, sets the rate. The server's own cost per request "
              "(uvicorn, JSON, tokenizing) shows in `--quick`'s tiny model, where the forward is almost free."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
