"""Benchmark of one `align dpo` step on SmolLM2-135M (full fine-tuning) against the bare compute.

    .venv/bin/python bench/bench_dpo.py            # all rows, table printed and written to BENCHMARKS.md
    .venv/bin/python bench/bench_dpo.py --pairs 2 --repeats 2

Rows, each measured in its own process (so peak memory is that configuration's own):
  bare           policy forward+backward on chosen+rejected and a reference forward, nothing else
                 (plain HF forwards, logits at every position), in the precision the hardware implies
  align dpo      PrefloopDPOTrainer optimizer steps (collation, response-position log-probs, reference
                 pass, loss, clipping, AdamW), timed per step by a callback
  align dpo, precomputed π_ref   the same with reference log-probs computed once (no reference model)
  TRL defaults   trl.DPOTrainer with DPOConfig's own defaults (bf16=True, gradient checkpointing on),
                 one step on a smaller batch so that a CPU without bf16 units finishes in minutes
  TRL tuned      trl.DPOTrainer with bf16 off and gradient checkpointing off

Times are the fastest timed step (after one warm-up step per process) over `--rounds` alternating runs of
the first three rows: on a shared machine other jobs only ever add time, so the minimum is the estimate
least disturbed by them. Also given per preference pair.
The target is align dpo ≤ 1.2 × bare on the same batch, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## DPO"


def pair_rows(n: int) -> list[dict]:
    """Preference pairs of about 75 tokens each (SmolLM2 chat template + prompt + response)."""
    topics = ["rivers", "clocks", "bread", "owls", "glass", "trains", "honey", "maps"]
    rows = []
    for i in range(n):
        t = topics[i % len(topics)]
        rows.append({
            "prompt": [{"role": "user", "content": f"In two short sentences, tell me why so many people like {t}."}],
            "chosen": [{"role": "assistant",
                        "content": f"People like {t} because they are useful and pleasant. "
                                   f"Many also find {t} beautiful, and interesting to learn about at any age."}],
            "rejected": [{"role": "assistant",
                          "content": f"I do not know anything about {t}, and I do not want to talk about {t} "
                                     f"or anything else today, so please ask someone else instead."}],
            "margin": 0.0})
    return rows


# ---------------------------------------------------------------------------------------------------
# one configuration per process
# ---------------------------------------------------------------------------------------------------

def run_bare(pairs: int, repeats: int) -> dict:
    import torch

    from align.train_common import load_policy
    from prefloop.hardware import detect

    policy, tokenizer = load_policy(None)
    reference, _ = load_policy(None)
    reference.eval().requires_grad_(False)
    batch = _collated(pairs, tokenizer)
    low = torch.bfloat16 if detect().bf16 else None

    def step():
        with torch.autocast("cpu", dtype=low, enabled=low is not None):
            logps = _sequence_logps(policy, batch)  # (2B,)
            with torch.no_grad():
                ref_logps = _sequence_logps(reference, batch)
        chosen, rejected = (logps - ref_logps).chunk(2)
        loss = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected)).mean()
        loss.backward()
        policy.zero_grad(set_to_none=True)

    times, cpu = [], []
    for _ in range(repeats + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"times": times[1:], "cpu": cpu[1:], "tokens": int(batch["attention_mask"].sum()),
            "shape": list(batch["input_ids"].shape)}


def _collated(pairs: int, tokenizer) -> dict:
    """The exact batch `align dpo` trains on: TRL's tokenisation and our collator."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    from align.dpo_trainer import PairCollator, PrefloopDPOTrainer

    class _Tokenise(PrefloopDPOTrainer):  # only the dataset preparation of the trainer
        def __init__(self):
            pass

    prepared = _Tokenise()._prepare_dataset(Dataset.from_list(pair_rows(pairs)), tokenizer,
                                            TRLDPOConfig(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True,
                                                         bf16=False), "bench")
    return PairCollator(pad_token_id=tokenizer.pad_token_id)([prepared[i] for i in range(pairs)])


def _sequence_logps(model, batch):
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # (2B,T-1,V)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logp * batch["completion_mask"][:, 1:]).sum(1)


def run_ours(pairs: int, repeats: int, precompute: bool) -> dict:
    from align.dpo_config import DPOConfig
    from align.dpo_trainer import train_offline

    data = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(pairs * (repeats + 1))))
    cfg = DPOConfig(data=str(data), output_dir=tempfile.mkdtemp(), batch_size=pairs,
                    max_steps=repeats + 1, save_steps=10_000, logging_steps=10_000, learning_rate=1e-6,
                    precompute_ref_log_probs=precompute)
    timer = _StepTimer()
    train_offline(cfg, callbacks=[timer])
    return {"times": timer.times[1:], "cpu": timer.cpu[1:]}


def run_trl(pairs: int, steps: int, defaults: bool) -> dict:
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    from prefloop.models import load_tokenizer, resolve_model

    path = resolve_model(None)
    kwargs = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=pairs, max_steps=steps,
                  report_to=[], save_strategy="no", logging_steps=10_000, use_cpu=True)
    if not defaults:
        kwargs.update(bf16=False, gradient_checkpointing=False)
    args = TRLDPOConfig(**kwargs)
    timer = _StepTimer()
    trainer = DPOTrainer(model=path, args=args, processing_class=load_tokenizer(None),
                         train_dataset=Dataset.from_list(pair_rows(pairs * steps)), callbacks=[timer])
    trainer.train()
    skip = 1 if len(timer.times) > 1 else 0
    return {"times": timer.times[skip:], "cpu": timer.cpu[skip:], "bf16": args.bf16,
            "gradient_checkpointing": bool(args.gradient_checkpointing)}


def _StepTimer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self._start = [], [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])

    return StepTimer()


# ---------------------------------------------------------------------------------------------------
# the driver: each row in a fresh process, then one table
# ---------------------------------------------------------------------------------------------------

def child(part: str, pairs: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", part, "--pairs", str(pairs), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{\"result\"")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])["result"]


def machine() -> str:
    import torch

    from prefloop.hardware import detect

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, {detect().describe()}; torch {torch.__version__}, "
            f"load average at start {os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step (bare and align dpo)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of bare / align dpo rows")
    parser.add_argument("--trl-default-pairs", type=int, default=2, help="batch of the TRL-defaults row")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.child:
        result = {"bare": lambda: run_bare(args.pairs, args.repeats),
                  "ours": lambda: run_ours(args.pairs, args.repeats, False),
                  "ours-precompute": lambda: run_ours(args.pairs, args.repeats, True),
                  "trl-default": lambda: run_trl(args.pairs, 1, True),
                  "trl-tuned": lambda: run_trl(args.pairs, args.repeats + 1, False)}[args.child]()
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps({"result": result}))
        return 0

    where = machine()
    rows = [("bare: policy fwd+bwd + reference fwd", "bare", args.pairs),
            ("align dpo (reference model in memory)", "ours", args.pairs),
            ("align dpo, precomputed π_ref (no reference model)", "ours-precompute", args.pairs),
            ("TRL 1.16 DPOTrainer, bf16 off, grad-ckpt off", "trl-tuned", args.pairs),
            ("TRL 1.16 DPOTrainer, its defaults (1 step)", "trl-default", args.trl_default_pairs)]
    results = {}
    for round_ in range(args.rounds):
        for label, part, pairs in rows[:3] if round_ else rows:
            print(f"running {label} (round {round_ + 1}) ...", flush=True)
            result = child(part, pairs, args.repeats)
            if part in results:  # later rounds add their steps; peak memory is the largest seen
                old = results[part][2]
                result = {**old, "times": old["times"] + result["times"], "cpu": old["cpu"] + result["cpu"],
                          "peak_rss_gib": max(old["peak_rss_gib"], result["peak_rss_gib"])}
            results[part] = (label, pairs, result)
    table = render(results, where)
    print(json.dumps({part: {"times": [round(t, 2) for t in res["times"]], "cpu": [round(c, 2) for c in res["cpu"]]}
                      for part, (_, _, res) in results.items()}))  # every timed step, for the log
    print(table)
    if not args.no_write:
        write_section(table)
    return 0


def render(results: dict, where: str) -> str:
    bare_res, bare_pairs = results["bare"][2], results["bare"][1]
    bare, bare_cpu = min(bare_res["times"]), min(bare_res["cpu"])
    lines = [SECTION, "", f"`python bench/bench_dpo.py` on {where}.", "",
             f"SmolLM2-135M-Instruct, full fine-tuning, pairs of ~{bare_res['tokens'] // (2 * bare_pairs)} tokens "
             f"(batch tensor {bare_res['shape']} = chosen + rejected rows); fastest timed step (after one warm-up "
             f"per process) over {len(bare_res['times'])} steps in alternating processes. CPU s = process CPU time (both threads), less sensitive than wall time to other jobs on a "
             f"shared machine. Ratios to bare are per pair.", "",
             "| configuration | pairs/step | wall s/step | wall s/pair | CPU s/pair | × bare (wall) | × bare (CPU) "
             "| peak RSS GiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, pairs, res in results.values():
        t, c = min(res["times"]), min(res["cpu"])
        lines.append(f"| {label} | {pairs} | {t:.2f} | {t / pairs:.2f} | {c / pairs:.2f} "
                     f"| {(t / pairs) / (bare / bare_pairs):.2f} | {(c / pairs) / (bare_cpu / bare_pairs):.2f} "
                     f"| {res['peak_rss_gib']:.2f} |")
    ours = results["ours"][2]
    trl = results["trl-default"][2]
    lines += ["", f"Target: align dpo ≤ 1.2 × bare on the same batch — measured "
              f"{min(ours['times']) / bare:.2f} × (wall), "
              f"{min(ours['cpu']) / bare_cpu:.2f} × (CPU). `align dpo` projects only response "
              f"positions onto the vocabulary (bare computes logits for every position) and uses the fused AdamW "
              f"kernel; TRL's Triton log-prob kernel runs as plain torch tiles on a CPU. The TRL-defaults row ran "
              f"with bf16={trl['bf16']}, gradient checkpointing={trl['gradient_checkpointing']}, one step "
              f"(its first, so it includes warm-up).", "", _bf16_note(), ""]
    return "\n".join(lines)


def _bf16_note() -> str:
    from prefloop.hardware import detect

    if detect().bf16:
        return ("This CPU has bf16 units (avx512_bf16): prefloop detects them and trains with bf16 autocast over "
                "fp32 weights, so every row except 'TRL tuned' (bf16 off, as the issue defines it) runs bf16 "
                "matmuls. On the issue's CPU without bf16 units, TRL's defaults took ~265 s/step at 8 pairs "
                "(~33 s/pair) and the tuned settings ~29 s/step.")
    return ("This CPU has no bf16 units: prefloop trains in fp32, and TRL's bf16 default runs every matmul "
            "in software-emulated bf16.")


def write_section(table: str) -> None:
    """Replace (or append) this benchmark's section of BENCHMARKS.md, leaving the others alone."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + table + ("\n" + text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + table
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
