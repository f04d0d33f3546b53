"""Make the documentation's pictures from a real run, so they can be refreshed with one command.

    python docs/make_pictures.py                       # runs what is missing, then writes docs/*.png
    python docs/make_pictures.py --loop runs/pictures-loop --grpo runs/pictures-grpo --out docs

What it uses, and makes when missing (on the embedded SmolLM2; tens of minutes on a CPU):
  * `--loop DIR`: two rounds of `align round` on the `round_demo` settings with 48 of its prompts
    (the store, its lineage and leaderboard, each round's eval.json with a best-of-N baseline). Screenshots are taken on a *copy* of its store, to which this script adds
    two accounts and a `tour` project holding the run's own held-out pairs (so the annotator page
    shows real answers); the run itself is never written to.
  * `--grpo DIR`: an `align grpo` run on sums graded by the shipped `graders_example` mix (its
    metrics.jsonl gives the reward-hacking monitors).
  * BENCHMARKS.md's GeneralPoints table, for its chart.

Writes: annotator.png and dashboard.png (headless Chromium via playwright, /usr/bin/chromium),
reward_vs_kl.png (align.evaluation.evaluate's own plot over every round's policy), monitors.png and
generalpoints.png (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUIDELINES = ("Prefer the response that answers the question **correctly** and **briefly**.\n\n"
              "- A wrong fact is worse than a long answer.\n- Ties are fine when both are equally good.")


def sh(*argv, **kwargs) -> subprocess.CompletedProcess:
    shown = ["***" if i and str(argv[i - 1]) == "--password" else str(a) for i, a in enumerate(argv)]
    print("+", " ".join(shown), flush=True)
    return subprocess.run([str(a) for a in argv], check=True, **kwargs)


def tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


# -- the runs -------------------------------------------------------------------------------------------

def ensure_loop(loop: Path, rounds: int, prompts: int = 48, heldout: int = 16) -> None:
    """`align round`, `rounds` times, on the shipped `round_demo` settings with fewer prompts (a CPU's hour)."""
    import yaml

    done = len(list(loop.glob("round-*/eval/eval.json")))
    if done >= rounds:
        return
    settings = loop / "round.yaml"
    if loop.exists() and any(loop.iterdir()) and not settings.exists():
        raise SystemExit(f"{loop}: not made by this script (no round.yaml): name an empty or new directory")
    loop.mkdir(parents=True, exist_ok=True)
    if not settings.exists():
        data = ROOT / "labeling"
        (loop / "prompts.jsonl").write_text("".join((data / "loop_prompts.jsonl").read_text().splitlines(True)[:prompts]))
        (loop / "heldout.jsonl").write_text("".join((data / "loop_heldout.jsonl").read_text().splitlines(True)[:heldout]))
        preset = yaml.safe_load((ROOT / "prefloop" / "configs" / "round_demo.yaml").read_text())
        preset.update(project="loop", db=str(loop / "store.db"), output_dir=str(loop), prompts=str(loop / "prompts.jsonl"),
                      eval_prompts=str(loop / "heldout.jsonl"))
        preset["evaluate"].update(best_of=[1, 2, 4], num_generations=2)  # best-of-N: the plot's baseline curve
        settings.write_text(yaml.safe_dump(preset, sort_keys=False))
        sh(tool("labeling"), "init", "--db", loop / "store.db", "--project", "loop")
    secret = loop / "sim-password"  # the simulated annotators' password, kept for the next rounds
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(16))
        secret.chmod(0o600)
    env = {**os.environ, "PREFLOOP_SIM_PASSWORD": secret.read_text()}
    for _ in range(rounds - done):
        sh(tool("align"), "round", "--config", settings, env=env)


def ensure_grpo(run: Path) -> None:
    if (run / "metrics.jsonl").exists():
        return
    data = run.parent / f"{run.name}-sums.jsonl"
    if data.exists():
        raise SystemExit(f"{data} exists: this script writes its own sums there (move it, or name another --grpo)")
    pairs = [(a, b) for a in range(3, 40, 3) for b in range(2, 30, 5)]
    data.write_text("".join(json.dumps({"prompt": f"What is {a} + {b}? Answer with the number.",
                                        "reference": str(a + b)}) + "\n" for a, b in pairs))
    sh(tool("align"), "grpo", "--config", "grpo_quick", "--prompts", data, "--graders", "graders_example.yaml",
       "--max-steps", 24, "--output-dir", run)


# -- screenshots ----------------------------------------------------------------------------------------

def screenshot_store(loop: Path, work: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the run's store with an admin, an annotator and a `tour` project of the run's held-out pairs."""
    import sqlite3

    store = work / "store.db"
    with sqlite3.connect(loop / "store.db") as src, sqlite3.connect(store) as dst:
        src.backup(dst)  # consistent even if the run's store were open
    accounts = {"ada": secrets.token_urlsafe(12), "root": secrets.token_urlsafe(12)}
    (work / "guidelines.md").write_text(GUIDELINES)
    pairs = sorted(loop.glob("round-*/pairs.test.jsonl"))[-1]
    labeling = tool("labeling")
    sh(labeling, "init", "--db", store, "--project", "tour", "--criteria", "helpfulness", "honesty",
       "--guidelines", work / "guidelines.md")
    sh(labeling, "users", "add", "ada", "--db", store, "--password", accounts["ada"])
    sh(labeling, "users", "add", "root", "--role", "admin", "--db", store, "--password", accounts["root"])
    sh(labeling, "import", "--db", store, "--project", "tour", "--file", pairs, "--model", "held-out")
    sh(labeling, "tasks", "build", "--db", store, "--project", "tour", "--strategy", "all_pairs", "--same-model-pairs")
    return store, accounts


def serve(store: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([tool("labeling"), "serve", "--db", str(store), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"labeling serve exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    raise SystemExit("labeling serve did not answer in 120 s")


def login(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.locator("input[type=text]").fill(name)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#pl-header >> text=signed in as")


def take_screenshots(loop: Path, out: Path, project: str) -> None:
    from playwright.sync_api import sync_playwright

    from prefloop.net import free_port
    from prefloop.testing import CHROMIUM, CHROMIUM_ARGS

    with tempfile.TemporaryDirectory(prefix="prefloop-pictures-") as tmp:
        store, accounts = screenshot_store(loop, Path(tmp))
        port = free_port()
        server = serve(store, port)
        url = f"http://127.0.0.1:{port}/"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(60_000)
                login(page, url, "ada", accounts["ada"])
                page.locator("#pl-project input").click()
                page.get_by_role("option", name="tour", exact=True).click()
                page.wait_for_function("() => document.querySelector('#pl-progress').innerText.includes('tour')")
                page.get_by_text("A is better (2)").click()  # the page as an annotator sees it mid-judgment
                page.wait_for_timeout(1000)
                page.screenshot(path=str(out / "annotator.png"), full_page=True)
                page.context.close()

                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(120_000)
                login(page, url, "root", accounts["root"])
                page.get_by_role("tab", name="Dashboard").click()
                page.locator("#pl-dash-project input").click()
                page.get_by_role("option", name=project, exact=True).click()
                page.wait_for_selector('#pl-dash-lineage:has-text("export")')
                page.wait_for_selector("#pl-dash-board-plot img")
                page.wait_for_timeout(2000)  # let the charts finish drawing
                bottom = page.locator("#pl-dash-lineage").bounding_box()
                page.screenshot(path=str(out / "dashboard.png"), full_page=True,
                                clip={"x": 0, "y": 0, "width": 1280, "height": bottom["y"] + bottom["height"] + 20})
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


# -- charts ---------------------------------------------------------------------------------------------

def reward_vs_kl(loop: Path, out: Path) -> None:
    """align eval's own plot, over every round's policy (each was evaluated against the same reference)."""
    from align.evaluation.evaluate import plot_reward_vs_kl

    reports = [json.loads(path.read_text()) for path in sorted(loop.glob("round-*/eval/eval.json"))]
    merged = dict(reports[-1])
    merged["policies"] = [{**row, "policy": f"round {i + 1}"} for i, report in enumerate(reports)
                          for row in report["policies"]]
    merged["best_of_n"] = [row for report in reports for row in report.get("best_of_n", [])]
    plot_reward_vs_kl(merged, out / "reward_vs_kl.png")


def monitors(run: Path, out: Path) -> None:
    """The reward-hacking monitors of a GRPO run, one panel each, from its metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefloop.metrics import read_metrics

    rows = [r for r in read_metrics(run / "metrics.jsonl") if "reward" in r and r["step"] > 0]
    graders = sorted({k for r in rows for k in r if k.startswith("grader/")})
    panels = [("reward of the mix", ["reward"]), ("each grader's mean", graders),
              ("share of full marks", ["full_marks"]), ("answer length (tokens)", ["response_length"]),
              ("KL(π‖π_ref) per answer", ["kl_k1"]), ("groups that all scored alike", ["zero_std_groups"])]
    if not any(r.get("kl_k1") for r in rows):  # beta 0: no reference model, so no KL to show
        panels[4] = ("answers that ended before the length cap", ["terminated"])
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.2), sharex=True)
    steps = [r["step"] for r in rows]
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            ax.plot(steps, [r.get(key) for r in rows], label=key.removeprefix("grader/"))
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(f"align grpo on SmolLM2: the reward-hacking monitors of {run.name}/metrics.jsonl", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "monitors.png", dpi=100)
    plt.close(fig)


def generalpoints(out: Path) -> None:
    """BENCHMARKS.md's GeneralPoints table as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    section = (ROOT / "BENCHMARKS.md").read_text().split("## GeneralPoints", 1)[1].split("\n## ", 1)[0]
    cell = r"([\d.]+)%(?: \[([\d.]+), ([\d.]+)\])?"  # 54.2% [44.2, 63.8]: success and its Wilson interval
    rows = re.findall(rf"^\| ([^|]+?) \| {cell} \| {cell} \|", section, flags=re.M)
    if not rows:
        raise SystemExit("BENCHMARKS.md: no GeneralPoints table (| model | ID success | OOD success | ...)")
    names = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.38
    for i, (label, colour) in enumerate((("in distribution", "tab:blue"), ("out of distribution", "tab:orange"))):
        values = [float(r[1 + 3 * i]) for r in rows]
        low = [v - float(r[2 + 3 * i] or v) for v, r in zip(values, rows)]
        high = [float(r[3 + 3 * i] or v) - v for v, r in zip(values, rows)]
        bars = ax.bar([x + (i - 0.5) * width for x in range(len(rows))], values, width, label=label, color=colour,
                      yerr=[low, high], capsize=3, error_kw={"elinewidth": 0.8})
        ax.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    ax.set_xticks(range(len(rows)), names)
    ax.set_ylabel("success on 96 test deals (%)")
    ax.set_title("GeneralPoints on SmolLM2-135M, with 95 % Wilson intervals (BENCHMARKS.md)", fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "generalpoints.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", type=Path, default=Path("runs/pictures-loop"), help="align round runs (made if missing)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of that run")
    parser.add_argument("--grpo", type=Path, default=Path("runs/pictures-grpo"), help="a GRPO run (made if missing)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument("--only", nargs="+", choices=["screenshots", "reward_vs_kl", "monitors", "generalpoints"],
                        help="make only these")
    args = parser.parse_args(argv)
    wanted = set(args.only or ["screenshots", "reward_vs_kl", "monitors", "generalpoints"])
    args.out.mkdir(parents=True, exist_ok=True)
    if "generalpoints" in wanted:
        generalpoints(args.out)
    if wanted & {"screenshots", "reward_vs_kl"}:
        ensure_loop(args.loop, args.rounds)
    if "reward_vs_kl" in wanted:
        reward_vs_kl(args.loop, args.out)
    if "screenshots" in wanted:
        take_screenshots(args.loop, args.out, "loop")
    if "monitors" in wanted:
        ensure_grpo(args.grpo)
        monitors(args.grpo, args.out)
    for name in ("annotator", "dashboard", "reward_vs_kl", "monitors", "generalpoints"):
        path = args.out / f"{name}.png"
        if path.exists():
            print(f"{path}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
