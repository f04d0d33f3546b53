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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, matmul_peak_flops, n_params, peak_rss_gib, roofline, step_timer, write_section

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
    device = policy.device  # the batch goes where the model is (a GPU when there is one)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in _collated(pairs, tokenizer).items()}
    low = torch.bfloat16 if detect().bf16 else None

    def step():
        with torch.autocast(device.type, dtype=low, enabled=low is not None):
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
        if device.type == "cuda":
            torch.cuda.synchronize()  # GPU work is asynchronous: the step ends when its kernels do
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"times": times[1:], "cpu": cpu[1:], "tokens": int(batch["attention_mask"].sum()),
            "shape": list(batch["input_ids"].shape), "n_params": n_params(policy)}


def _collated(pairs: int, tokenizer) -> dict:
    """The exact batch `align dpo` trains on: TRL's tokenisation and our collator."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    from align.offline.dpo_trainer import PairCollator, PrefloopDPOTrainer

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
    from align.offline.dpo_config import DPOConfig
    from align.offline.dpo_trainer import train_offline

    data = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(pairs * (repeats + 1))))
    cfg = DPOConfig(data=str(data), output_dir=tempfile.mkdtemp(), per_device_train_batch_size=pairs,
                    max_steps=repeats + 1, save_steps=10_000, logging_steps=10_000, learning_rate=1e-6,
                    precompute_ref_log_probs=precompute)
    timer = step_timer()
    train_offline(cfg, callbacks=[timer])
    return {"times": timer.times[1:], "cpu": timer.cpu[1:]}


def run_trl(pairs: int, steps: int, defaults: bool) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    from prefloop.models import load_tokenizer, resolve_model

    path = resolve_model(None)
    from prefloop.hardware import trainer_precision_kwargs

    kwargs = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=pairs, max_steps=steps,
                  report_to=[], save_strategy="no", logging_steps=10_000, use_cpu=not torch.cuda.is_available())
    if not defaults:  # the best settings for this machine: the precision prefloop picks, no checkpointing
        kwargs.update(trainer_precision_kwargs(gradient_checkpointing=False))
    args = TRLDPOConfig(**kwargs)
    timer = step_timer()
    trainer = DPOTrainer(model=path, args=args, processing_class=load_tokenizer(None),
                         train_dataset=Dataset.from_list(pair_rows(pairs * steps)), callbacks=[timer])
    trainer.train()
    return {"times": timer.times[1:], "cpu": timer.cpu[1:], "bf16": args.bf16,
            "gradient_checkpointing": bool(args.gradient_checkpointing)}


# ---------------------------------------------------------------------------------------------------
# the driver: each row in a fresh process, then one table
# ---------------------------------------------------------------------------------------------------

def child(part: str, pairs: int, repeats: int, trl_default_steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", part, "--pairs", str(pairs), "--repeats", str(repeats),
           "--trl-default-steps", str(trl_default_steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{\"result\"")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])["result"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step (bare and align dpo)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of bare / align dpo rows")
    parser.add_argument("--trl-default-pairs", type=int, default=2, help="batch of the TRL-defaults row")
    parser.add_argument("--trl-default-steps", type=int, default=2, help="timed steps of the TRL-defaults row "
                        "(after one warm-up step): on a CPU without bf16 units each takes minutes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.child:
        result = {"bare": lambda: run_bare(args.pairs, args.repeats),
                  "ours": lambda: run_ours(args.pairs, args.repeats, False),
                  "ours-precompute": lambda: run_ours(args.pairs, args.repeats, True),
                  "trl-default": lambda: run_trl(args.pairs, args.trl_default_steps + 1, True),
                  "trl-tuned": lambda: run_trl(args.pairs, args.repeats + 1, False)}[args.child]()
        result["peak_rss_gib"] = peak_rss_gib()
        print(json.dumps({"result": result}))
        return 0

    where = machine()
    peak = matmul_peak_flops()  # same precision as the rows, measured again at the end: the best is kept
    rows = [("bare: policy fwd+bwd + reference fwd", "bare", args.pairs),
            ("align dpo (reference model in memory)", "ours", args.pairs),
            ("align dpo, precomputed π_ref (no reference model)", "ours-precompute", args.pairs),
            ("TRL 1.16 DPOTrainer, prefloop's precision, grad-ckpt off", "trl-tuned", args.pairs),
            ("TRL 1.16 DPOTrainer, its defaults", "trl-default", args.trl_default_pairs)]
    results = {}
    for round_ in range(args.rounds):
        for label, part, pairs in rows[:3] if round_ else rows:
            print(f"running {label} (round {round_ + 1}) ...", flush=True)
            result = child(part, pairs, args.repeats, args.trl_default_steps)
            if part in results:  # later rounds add their steps; peak memory is the largest seen
                old = results[part][2]
                result = {**old, "times": old["times"] + result["times"], "cpu": old["cpu"] + result["cpu"],
                          "peak_rss_gib": max(old["peak_rss_gib"], result["peak_rss_gib"])}
            results[part] = (label, pairs, result)
    peak = max(peak, matmul_peak_flops())
    table = render(results, where, peak)
    print(json.dumps({part: {"times": [round(t, 2) for t in res["times"]], "cpu": [round(c, 2) for c in res["cpu"]]}
                      for part, (_, _, res) in results.items()}))  # every timed step, for the log
    print(table)
    if not args.no_write:
        write_section(SECTION, table)
    return 0


# FLOPs per token of each row, in units of N (6·N per token for a training pass, 2·N for a forward)
PASSES = {"bare": 8, "ours": 8, "ours-precompute": 6, "trl-tuned": 8, "trl-default": 8}


def render(results: dict, where: str, peak: float) -> str:
    bare_res, bare_pairs = results["bare"][2], results["bare"][1]
    bare, bare_cpu = min(bare_res["times"]), min(bare_res["cpu"])
    tokens_per_pair, n = bare_res["tokens"] / bare_pairs, bare_res["n_params"]
    lines = [SECTION, "", f"`python bench/bench_dpo.py` on {where}.", "",
             f"SmolLM2-135M-Instruct, full fine-tuning, pairs of ~{bare_res['tokens'] // (2 * bare_pairs)} tokens "
             f"(batch tensor {bare_res['shape']} = chosen + rejected rows); fastest timed step (after one warm-up "
             f"per process) over {len(bare_res['times'])} steps in alternating processes. CPU s = process CPU time "
             "(both threads), less sensitive than wall time to other jobs on a shared machine. Ratios to bare are "
             f"per pair. Roofline: achieved FLOP/s (8·N·tokens per step: 6·N for the policy's forward+backward, "
             f"2·N for the reference forward; 6·N with π_ref precomputed; N = {n / 1e6:.1f}M) as a fraction of a "
             f"same-precision {peak / 1e9:.0f} GFLOP/s matmul peak measured in this run.", "",
             "| configuration | pairs/step | wall s/step | wall s/pair | CPU s/pair | × bare (wall) | × bare (CPU) "
             "| roofline | peak RSS GiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for part, (label, pairs, res) in results.items():
        t, c = min(res["times"]), min(res["cpu"])
        frac = roofline(n, tokens_per_pair * pairs, t, peak, passes=PASSES[part])
        lines.append(f"| {label} | {pairs} | {t:.2f} | {t / pairs:.2f} | {c / pairs:.2f} "
                     f"| {(t / pairs) / (bare / bare_pairs):.2f} | {(c / pairs) / (bare_cpu / bare_pairs):.2f} "
                     f"| {frac:.0%} | {res['peak_rss_gib']:.2f} |")
    ours = results["ours"][2]
    trl, tuned = results["trl-default"][2], results["trl-tuned"][2]
    lines += ["", f"Target: align dpo ≤ 1.2 × bare on the same batch — measured "
              f"{min(ours['times']) / bare:.2f} × (wall), "
              f"{min(ours['cpu']) / bare_cpu:.2f} × (CPU). `align dpo` projects only response "
              f"positions onto the vocabulary (bare computes logits for every position) and uses the fused AdamW "
              f"kernel; TRL's Triton log-prob kernel runs as plain torch tiles on a CPU. Both TRL rows are timed "
              f"after a warm-up step: its defaults ran with bf16={trl['bf16']}, gradient checkpointing="
              f"{trl['gradient_checkpointing']}; tuned with bf16={tuned['bf16']} (the precision prefloop picks "
              f"here), gradient checkpointing={tuned['gradient_checkpointing']}.", "", _bf16_note(), ""]
    return "\n".join(lines)


def _bf16_note() -> str:
    from prefloop.hardware import detect

    if detect().bf16:
        return ("This CPU has bf16 units (avx512_bf16): prefloop detects them and trains with bf16 autocast over "
                "fp32 weights, so every row runs bf16 matmuls.")
    return ("This CPU has no bf16 units: prefloop trains in fp32 (and so does 'TRL tuned'), while TRL's bf16 "
            "default runs every matmul in software-emulated bf16.")


if __name__ == "__main__":
    sys.exit(main())
