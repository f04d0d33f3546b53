"""The loop's result over seeds: `align demo` (the round_demo preset, or --preset's) run once per seed in each precision
this machine has, and the distribution of what the round achieved.

    .venv/bin/python bench/bench_loop.py --seeds 3              # table printed; runs kept in a temp dir
    .venv/bin/python bench/bench_loop.py --seeds 10 --write     # ... and written to BENCHMARKS.md
    .venv/bin/python bench/bench_loop.py --seeds 2 --precisions fp32 --output-dir runs/bench-loop
    .venv/bin/python bench/bench_loop.py --seeds 10 --jobs 2    # two demos at once, one thread each

Each run is `align demo --seed S --output-dir DIR/<precision>-seed<S>` in its own process, the precision
chosen by PREFLOOP_CPU_BF16 on a CPU (bf16 only where the CPU has bf16 units); on a GPU the device's own
(bf16). Seeds alternate between the precisions, so that a change of load on a shared machine falls on
both alike. What a run achieved is read back from what it wrote (eval.json, the trainers' run.json).

`--jobs J` runs J demos at once, each on cores // J threads (OMP_NUM_THREADS, when set, wins); the minutes
per run are then those of J demos sharing the machine. On a machine shared with other jobs, run it with
OMP_NUM_THREADS=1: under a load of ~18 on 2 cores, sampling the demo's candidates took 2.9 s per candidate on
one thread and 37 s on two (threads spinning against each other); the runs inherit this process's environment.

Per precision: median, min and max of the gold win rate against the reference, of KL/seq and of the
length of the answers; how many runs' 95 % interval lies wholly above 50 % (the run beat the reference);
and minutes per run. One row per run follows, with the reward model's held-out accuracy, the DPO
policy's held-out implicit-reward margin and accuracy, and the precision each part ran in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, child_env, machine, write_section

SECTION = "## The loop's result over seeds (align demo)"


def precisions() -> list[str]:
    """Every precision this machine can run the demo in: fp32, and bf16 on a CPU with bf16 units;
    on a GPU the one the device implies (no switch picks another there)."""
    from prefloop.hardware import _cpu_flags_bf16, detect

    hw = detect()
    if hw.device != "cpu":
        return [hw.precision]
    return ["fp32", "bf16"] if _cpu_flags_bf16() else ["fp32"]


def run_demo(out: Path, seed: int, precision: str, preset: str, threads: str) -> dict:
    """One `align demo` in its own process on `threads` threads; -> its results (see `results`), or the
    error's last lines."""
    env = child_env(threads=threads, precision=precision)
    cmd = [sys.executable, "-m", "loop.cli", "demo", "--output-dir", str(out), "--seed", str(seed),
           "--preset", preset]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    minutes = (time.perf_counter() - start) / 60
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"seed": seed, "precision": precision, "minutes": minutes,
                "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return {"seed": seed, "precision": precision, "minutes": minutes, **results(out / "round-1", preset)}


def results(round_dir: Path, preset: str) -> dict:
    """What round 1 achieved, from its files: eval.json, the reward model's and policy's run.json, and what
    DPO learned from its pairs (`first_pass`)."""
    report = json.loads((round_dir / "eval" / "eval.json").read_text())
    final = report["policies"][-1]
    rm = json.loads((round_dir / "reward_model" / "run.json").read_text())
    dpo = json.loads((round_dir / "policy" / "run.json").read_text())
    after = dpo.get("eval_after", {})
    return {"win": final.get("win_rate_gold") or final.get("win_rate_reward"), "kl": final.get("kl_per_sequence"),
            "length": final.get("length"), "reference_length": report["reference_stats"].get("length"),
            "rm_accuracy": rm.get("metrics", {}).get("eval_accuracy"),
            "dpo_margin": after.get("eval_rewards/margins"), "dpo_accuracy": after.get("eval_rewards/accuracies"),
            **first_pass(round_dir, preset),
            "parts": {"reward model": f"{rm.get('precision')} autocast", "DPO": f"{dpo.get('precision')} autocast",
                      "generation, evaluation": report.get("precision", "n/a")}}


def first_pass(round_dir: Path, preset: str) -> dict:
    """The training pairs (how many, and the share whose chosen answer the preset's gold prefers: the label
    noise) and DPO's mean training margin and accuracy over its first epoch, where every batch holds pairs it
    has not seen yet: what DPO learned that carries over to new pairs (epoch 2 meets the same pairs again)."""
    from prefloop.config import load_yaml, resolve_config
    from prefloop.gold import load_gold

    gold = load_gold(load_yaml(resolve_config(preset))["gold"])
    pairs = [json.loads(line) for line in (round_dir / "pairs.train.jsonl").read_text().splitlines() if line]
    prompts = [p["prompt"] for p in pairs]
    chosen, rejected = gold(prompts, [p["chosen"] for p in pairs]), gold(prompts, [p["rejected"] for p in pairs])
    agree = [c > r for c, r in zip(chosen, rejected)]
    logs = [json.loads(line) for line in (round_dir / "policy" / "metrics.jsonl").read_text().splitlines()]
    first = [m for m in logs if "rewards/margins" in m and "eval_loss" not in m and m.get("epoch", 2) <= 1]
    mean = lambda key: statistics.fmean(m[key] for m in first) if first else None
    return {"pairs": len(pairs), "gold_agreement": sum(agree) / len(pairs) if pairs else None,
            "first_pass_margin": mean("rewards/margins"), "first_pass_accuracy": mean("rewards/accuracies")}


def _spread(values: list[float], spec: str) -> str:
    if not values:
        return "n/a"
    return f"{format(statistics.median(values), spec)} [{format(min(values), spec)}, {format(max(values), spec)}]"


def summary_table(runs: list[dict]) -> str:
    head = ("| precision | runs | gold win % median [min, max] | interval above 50 % | KL/seq median [min, max] "
            "| length median [min, max] (reference) | min per run |\n| --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for precision in dict.fromkeys(r["precision"] for r in runs):
        done = [r for r in runs if r["precision"] == precision and "error" not in r]
        failed = sum(1 for r in runs if r["precision"] == precision and "error" in r)
        ref = statistics.median(r["reference_length"] for r in done) if done else None
        lines.append(
            f"| {precision} | {len(done)}{f' ({failed} failed)' if failed else ''} "
            f"| {_spread([100 * r['win']['rate'] for r in done], '.1f')} "
            f"| {sum(r['win']['lo'] > 0.5 for r in done)} of {len(done)} "
            f"| {_spread([r['kl'] for r in done], '.2f')} "
            f"| {_spread([r['length'] for r in done], '.1f')} ({'n/a' if ref is None else f'{ref:.1f}'}) "
            f"| {_spread([r['minutes'] for r in runs if r['precision'] == precision], '.1f')} |")
    return "\n".join(lines)


def runs_table(runs: list[dict]) -> str:
    lines = ["| seed | precision | gold win % [95 %] | KL/seq | length (reference) | pairs (gold agrees) | RM accuracy "
             "| DPO first-pass margin, accuracy | DPO held-out margin, accuracy | min | precision of the parts |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['seed']} | {r['precision']} | failed: {' '.join(r['error'])} | | | | | | | "
                         f"{r['minutes']:.1f} | |")
            continue
        w = r["win"]
        lines.append(f"| {r['seed']} | {r['precision']} | {100 * w['rate']:.1f} [{100 * w['lo']:.1f}, "
                     f"{100 * w['hi']:.1f}] | {r['kl']:.2f} | {r['length']:.1f} ({r['reference_length']:.1f}) "
                     f"| {r.get('pairs', 'n/a')} ({_num(r.get('gold_agreement'), '.2f')}) | {_num(r['rm_accuracy'])} "
                     f"| {_num(r.get('first_pass_margin'))}, {_num(r.get('first_pass_accuracy'), '.2f')} "
                     f"| {_num(r['dpo_margin'])}, {_num(r['dpo_accuracy'])} "
                     f"| {r['minutes']:.1f} | {', '.join(f'{k} {v}' for k, v in r['parts'].items())} |")
    return "\n".join(lines)


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per precision (seeds first-seed, first-seed+1, ...)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first run's seed")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="default: every precision this machine has")
    parser.add_argument("--preset", default="round_demo", help="the demo's round preset (name or path)")
    parser.add_argument("--jobs", type=int, default=1, help="demos at once (each on cores // jobs threads)")
    parser.add_argument("--output-dir", default=None, help="a new directory for the runs (default: a temp dir)")
    parser.add_argument("--write", action="store_true", help=f"write the table to BENCHMARKS.md ({SECTION})")
    parser.add_argument("--table", metavar="DIR", nargs="+", default=None,
                        help="print (and with --write write) the table of the runs earlier benches left in DIR(s), "
                             "re-read from their run directories where those are still there")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: run at least one demo at a time")
    if args.table:
        return report(earlier_runs([Path(d) for d in args.table], args.preset), args, machine(), args.write)

    out = Path(args.output_dir or tempfile.mkdtemp(prefix="bench-loop-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out}: exists and is not empty; give a new --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.precisions or precisions()
    header = machine()
    print(f"[bench_loop] {header}\n[bench_loop] runs in {out}")
    todo = [(seed, precision) for seed in range(args.first_seed, args.first_seed + args.seeds) for precision in chosen]
    runs = sweep(todo, out, args.preset, args.jobs)
    return report(runs, args, header, args.write)


def sweep(todo: list[tuple[int, str]], out: Path, preset: str, jobs: int) -> list[dict]:
    """Run the demos of `todo`, `jobs` at a time (each on cores // jobs threads unless OMP_NUM_THREADS says);
    print each as it ends and keep runs.json up to date, so a bench stopped early keeps what it measured."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    runs, lock = [], threading.Lock()

    def one(seed: int, precision: str) -> None:
        run = run_demo(out / f"{precision}-seed{seed}", seed, precision, preset, threads)
        with lock:
            runs.append(run)
            print(f"[bench_loop] seed {seed} {precision}: "
                  + (f"failed: {run['error']}" if "error" in run else
                     f"gold win {100 * run['win']['rate']:.1f} % [{100 * run['win']['lo']:.1f}, "
                     f"{100 * run['win']['hi']:.1f}], KL {run['kl']:.2f}, length {run['length']:.1f}")
                  + f", {run['minutes']:.1f} min", flush=True)
            (out / "runs.json").write_text(json.dumps(runs, indent=2))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for done in [pool.submit(one, seed, precision) for seed, precision in todo]:
            done.result()
    return in_order(runs)


def in_order(runs: list[dict]) -> list[dict]:
    order = {"fp32": 0, "bf16": 1}
    return sorted(runs, key=lambda r: (r["seed"], order.get(r["precision"], 2)))


def earlier_runs(dirs: list[Path], preset: str) -> list[dict]:
    """The runs recorded in each DIR/runs.json, in seed order, each re-read from DIR/<precision>-seed<seed>/
    where it is still there (so a column added since the run was made is filled in)."""
    runs = []
    for d in dirs:
        if not (d / "runs.json").is_file():
            sys.exit(f"{d}: no runs.json here; give a directory a bench_loop run wrote (its --output-dir)")
        for run in json.loads((d / "runs.json").read_text()):
            round_dir = d / f"{run['precision']}-seed{run['seed']}" / "round-1"
            if "error" not in run and (round_dir / "eval" / "eval.json").is_file():
                run = {**run, **results(round_dir, preset)}
            runs.append(run)
    return in_order(runs)


def report(runs: list[dict], args, header: str, write: bool) -> int:
    """Print the tables of `runs` (and write them into BENCHMARKS.md)."""
    seeds = sorted({r["seed"] for r in runs})
    text = (f"{SECTION}\n\n`python bench/bench_loop.py --seeds {len(seeds)} --first-seed {seeds[0] if seeds else 1}"
            f"{' --precisions ' + ' '.join(args.precisions) if args.precisions else ''}"
            f"{'' if args.preset == 'round_demo' else ' --preset ' + args.preset}"
            f"{f' --jobs {args.jobs}' if args.jobs > 1 else ''}` on {header}.\n\n"
            f"{summary_table(runs)}\n\nEvery run:\n\n{runs_table(runs)}\n")
    print("\n" + text)
    if write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
