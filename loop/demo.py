"""`align demo`: the whole loop, headless, on the embedded SmolLM2-135M-Instruct with simulated annotators.

    align demo                  # round 1 in runs/loop-demo (20-30 minutes on two CPU cores)
    align demo --rounds 2       # run again (or with --rounds) for the next rounds; earlier rounds stay

It makes a store in OUTPUT_DIR, imports the bundled prompts, and runs `align round` with the shipped
preset `round_demo` (prefloop/configs/round_demo.yaml): candidates from the current policy, three
simulated annotators judging over the app's HTTP API by a known gold preference (concise answers:
prefloop.gold.concise), the export, a LoRA reward model, LoRA-DPO, and an evaluation on held-out
prompts. Then it prints the round table (loop.round_report) and the lineage.

The annotators' accounts get a random password, kept in OUTPUT_DIR/demo.json (readable by you alone)
so that a later run can continue the loop. A directory the demo did not make is refused, never reused.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefloop.errors import InputError

MARKER = "demo.json"
# Percent of a round's time each step took in measured runs (SmolLM2, the round_demo preset, 2 CPU cores; seeds 6
# and 10 of bench/bench_loop.py): the overall bar moves by these as the steps end, so its ETA is
# elapsed / done-share - elapsed from the first step on.
STEP_SHARE = {"generate": 11, "judge": 3, "export": 1, "reward_model": 21, "align": 51, "evaluate": 13}


@dataclass
class DemoConfig:
    """Run the loop headless on the embedded model with simulated annotators, and print the round table."""

    output_dir: str = field(default="runs/loop-demo", metadata={
        "help": "the demo's directory: store.db, demo.json, round-N/ (made by the demo; another is refused)"})
    rounds: int = field(default=1, metadata={"help": "rounds to run now (a later run continues the loop)"})
    preset: str = field(default="round_demo", metadata={
        "help": "the round's YAML (a shipped preset name or a path); store, output_dir and prompts are the demo's"})
    seed: int | None = field(default=None, metadata={
        "help": "the round's seed (default: the preset's): one seed, the same candidates, votes and training data"})

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"rounds={self.rounds}: run at least one")


def prepare(cfg: DemoConfig) -> dict:
    """The demo's directory, store, project and annotator password, made once; -> demo.json's contents."""
    from labeling.db import open_store, session_scope
    from labeling.projects import create_project

    out = Path(cfg.output_dir)
    marker = out / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and was not made by `align demo`; choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    state = {"db": f"sqlite:///{(out / 'store.db').resolve()}", "password": secrets.token_urlsafe(16)}
    engine = open_store(state["db"])
    try:
        with session_scope(engine) as session:
            create_project(session, "loop-demo", overlap=1,
                           guidelines="Prefer the answer that says what is needed in fewer words.")
    finally:
        engine.dispose()
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds a password
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    return state


def round_config(cfg: DemoConfig, state: dict):
    """The preset as `align round` reads it (its prompt files relative to it; a shipped preset's
    `labeling/loop_prompts.jsonl` is the package's file, from any directory), in the demo's store."""
    from loop.round_config import RoundConfig
    from prefloop.config import parse_config

    seed = ("--seed", str(cfg.seed)) if cfg.seed is not None else ()
    return parse_config(RoundConfig, ["--config", cfg.preset, "--store", state["db"], "--output-dir", cfg.output_dir,
                                      "--project", "loop-demo", *seed], prog="align demo")


def run_demo(cfg: DemoConfig) -> list[dict]:
    """Rounds, then the round table of every round so far; -> its rows."""
    from tqdm.auto import tqdm

    from labeling.db import open_store
    from labeling.lineage import format_lineage, lineage
    from loop.round import run_round
    from loop.round_report import format_round_table, round_rows, verdict

    check_demo_inputs(cfg)  # every input, before the demo writes anything
    state = prepare(cfg)
    rcfg = round_config(cfg, state)
    env = rcfg.simulate.get("password_env", "PREFLOOP_SIM_PASSWORD")
    os.environ[env] = state["password"]  # this process's simulated annotators only
    start = time.perf_counter()
    with tqdm(total=100 * cfg.rounds, desc="loop demo", unit="%", position=0,
              bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]") as bar:
        for _ in range(cfg.rounds):
            result = run_round(rcfg, on_step=lambda name: bar.update(STEP_SHARE[name]))
            tqdm.write(f"[prefloop] round {result['round']} done after {(time.perf_counter() - start) / 60:.1f} min")
    engine = open_store(rcfg.store, create=False)
    try:
        rows = round_rows(engine, rcfg)
        print("\n" + format_lineage(lineage(engine, rcfg.project)))  # it has its own "lineage:" heading
    finally:
        engine.dispose()
    print(f"\nthe loop on {rcfg.reference} with simulated annotators (gold: {rcfg.gold}), "
          f"{(time.perf_counter() - start) / 60:.1f} min:")
    print(format_round_table(rows))
    print(f"\n[prefloop] round {rows[-1]['round']}: {verdict(rows[-1])}")
    return rows


def check_demo_inputs(cfg) -> None:
    """`align demo`: its directory, its preset and the round that preset describes, before the demo
    writes its store and demo.json."""
    from loop.round_inputs import check_round_config
    from prefloop.outputs import check_output_dir

    out = Path(cfg.output_dir)
    ours = (out / MARKER).is_file() or (out.is_dir() and not any(out.iterdir()))
    if out.is_dir() and not ours:
        raise InputError(f"{out}: exists and was not made by `align demo`; choose another --output-dir")
    check_output_dir(out, "--output-dir", ours=True)
    rcfg = round_config(cfg, {"db": f"sqlite:///{(out / 'store.db').absolute()}"})  # the preset: found, valid
    check_round_config(rcfg)


def main(argv: list[str] | None = None) -> int:
    from prefloop.config import parse_config

    run_demo(parse_config(DemoConfig, argv, prog="align demo"))
    return 0
