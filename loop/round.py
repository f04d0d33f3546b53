"""`align round --config round.yaml`: one turn of the loop, every artifact recorded with its lineage.

    round N (N = the current policy's round + 1):
      1. generate   n candidates per prompt from the current policy and from the reference
      2. tasks      random pairs of those candidates (across the two models once they differ)
      3. judgments  simulated / AI annotators over the app's HTTP API, or wait for people
      4. export     every round's judgments so far as pairwise preference data
      5. reward     `reward-model train` on the export
      6. align      `align dpo` on the export, `align online-dpo` or `align ppo` against the reward model,
                    from the current policy (each a run directory of prefloop.run: OUT/final, run.json);
                    5 and 6 in this process, or under `accelerate launch` with a `launch:` section (loop.launch)
      7. evaluate   `align eval`: the new policy against the reference on held-out prompts
      8. register   the new policy becomes the current one; the next round starts from it

The current policy is the latest `policy` record of the project's lineage (`labeling.lineage`);
the first round registers the reference as round 0's policy. Records: candidates, export,
reward_model, policy and evaluation, each with its parents, shown by `labeling stats`.

One source of truth per fact: a training run's config, data, parent model and results are in its
run.json (prefloop.run); its lineage record holds the store's side (round, parents by record id) and
points at that run.json (`details["run"]`), with a one-line summary for display.
"""

from __future__ import annotations

import time
from pathlib import Path

from loop.round_config import RoundConfig


def current_policy(engine, cfg: RoundConfig) -> dict:
    """The latest registered policy; the reference as round 0's policy when there is none yet."""
    from labeling.lineage import latest, record
    from prefloop.models import DEFAULT_MODEL

    found = latest(engine, cfg.project, "policy")
    if found is None:
        name = cfg.reference or DEFAULT_MODEL
        record(engine, cfg.project, 0, "policy", name, details={"summary": "the reference"})
        found = latest(engine, cfg.project, "policy")
    return found


def generate_and_build(engine, cfg: RoundConfig, policy: dict, r: int) -> int:
    """Steps 1-2; -> the id of the `candidates` record."""
    from labeling.generate import generate_candidates
    from labeling.lineage import record
    from labeling.tasks import build_tasks
    from prefloop.generation import SamplingConfig

    models = list(dict.fromkeys([policy["name"], cfg.reference or policy["name"]]))  # one model in round 1
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + r)
    added = sum(generate_candidates(engine, cfg.project, m, n=cfg.num_generations, round=r, sampling=sampling).candidates_added
                for m in models)
    tasks = build_tasks(engine, cfg.project, "random_pairs", pairs_per_prompt=cfg.pairs_per_prompt, models=models,
                        round=r, cross_model_only=len(models) > 1, seed=cfg.seed + r)
    return record(engine, cfg.project, r, "candidates", f"round {r} candidates", [policy["id"]],
                  {"models": models, "candidates": added, "tasks": tasks,
                   "summary": f"{added} candidates from {len(models)} model(s), {tasks} tasks"})


def collect_judgments(engine, cfg: RoundConfig, r: int, password: str | None) -> None:
    """Step 3: simulated annotators over HTTP (a server of our own unless cfg.url), or wait for people."""
    from labeling.tasks import round_progress

    if cfg.judges == "people":
        while (progress := round_progress(engine, cfg.project, r))["open"] > 0:
            print(f"[prefloop] round {r}: {progress['open']} of {progress['tasks']} tasks still need judgments")
            time.sleep(cfg.poll_seconds)
        return
    from labeling.simulate import SimulateConfig, policies, run_annotators

    sim = SimulateConfig(**{"url": cfg.url or "", "project": cfg.project, "gold": cfg.gold or "positive_words",
                            "seed": cfg.seed, **cfg.simulate})
    _ensure_accounts(engine, sim.annotators, password)
    server, url = (None, cfg.url) if cfg.url else _local_server(engine, cfg.project)
    try:  # who judges which task is drawn from the seed, not left to the race: a seed's votes are repeatable
        done = run_annotators(url, cfg.project, [(n, password, p) for n, p in zip(sim.annotators, policies(sim))],
                              fixed_seed=cfg.seed + r, judges_per_task=_overlap(engine, cfg.project))
    finally:
        if server is not None:
            server.close()
    print(f"[prefloop] round {r}: {sum(done.values())} judgments from {len(done)} simulated annotators")


def _overlap(engine, project: str) -> int:
    from labeling.db import get_project, session_scope

    with session_scope(engine, immediate=False) as session:
        return get_project(session, project).overlap


def _ensure_accounts(engine, names: list[str], password: str) -> None:
    """Create the simulated annotators' accounts that do not exist yet (an admin's set-up step)."""
    from labeling.db import session_scope
    from labeling.users import create_user, list_users

    with session_scope(engine) as session:
        have = {u.name for u in list_users(session)}
        for name in names:
            if name not in have:
                create_user(session, name, password)


def _local_server(engine, project: str):
    """(app, url) of a `labeling serve` in a background thread of this process, on a free port."""
    from labeling.serve import serve
    from prefloop.net import free_port

    port = free_port()
    return serve(engine, "127.0.0.1", port, project, block=False, quiet=True), f"http://127.0.0.1:{port}/"


def export_round(engine, cfg: RoundConfig, out: Path, parent: int, r: int) -> tuple[Path, int]:
    """Step 4: pairwise rows of every round so far, prompts split by `test_fraction` as `labeling export`
    does; -> (the training file, id of the `export` record). The trainers evaluate on its X.test.jsonl."""
    from labeling.export import export_dataset
    from labeling.export_files import write_export
    from labeling.lineage import record

    splits, card = export_dataset(engine, cfg.project, "pairwise", test_fraction=cfg.test_fraction,
                                  seed=cfg.seed)
    splits = {split: sorted(rows, key=lambda row: row["task_id"]) for split, rows in splits.items()}  # not in
    path = out / "pairs.jsonl"  # the order the votes arrived: the trainers' data order is the seed's alone
    write_export(splits, path, card=card)
    train = out / "pairs.train.jsonl" if "test" in splits else path
    rows = {split: len(v) for split, v in splits.items()}
    facts = {"snapshot": card["snapshot"], "rounds": card["rounds"], "models": card["models"]}
    return train, record(engine, cfg.project, r, "export", str(train), [parent],
                         {"rows": rows, **facts,
                          "summary": ", ".join(f"{n} {split} pairs" for split, n in rows.items())})


def _run_record(final_dir: Path, summary: str, **details) -> dict:
    """An Artifact row's details for a training run: where its run.json is (the one record of its config,
    data, parent model and results; prefloop.run) and a one-line summary for `labeling stats`."""
    from prefloop.run import RUN_FILE, run_dir_of

    run = run_dir_of(final_dir)
    return {**details, "run": str(run / RUN_FILE) if run is not None else None, "summary": summary}


def train_reward_model(engine, cfg: RoundConfig, data: Path, out: Path, parent: int, r: int) -> tuple[str, int]:
    """Step 5; -> (the run directory, id of the `reward_model` record)."""
    from labeling.lineage import record
    from loop.launch import TRAINERS, run_trainer
    from prefloop.run import read_run

    run_dir = out / "reward_model"
    values = {"seed": cfg.seed, **cfg.reward_model, "data": str(data), "output_dir": str(run_dir), "store": None,
              "project": None}
    final = run_trainer(TRAINERS["reward_model"], values, cfg.launch, out / "reward_model.yaml")
    accuracy = read_run(run_dir).get("metrics", {}).get("eval_accuracy")
    summary = f"held-out accuracy {accuracy:.3f}" if accuracy is not None else "no held-out pairs"
    print(f"[prefloop] round {r}: reward model {run_dir}: {summary}")
    return str(run_dir), record(engine, cfg.project, r, "reward_model", str(run_dir), [parent],
                                _run_record(final, summary))


def align_policy(cfg: RoundConfig, policy: str, data: Path, reward_model: str, out: Path) -> Path:
    """Step 6, from the current policy, with the trainer of `align <algorithm>`; -> OUT/final of its run."""
    from loop.launch import TRAINERS, run_trainer

    fixed = {"model": policy, "output_dir": str(out / "policy")}
    if cfg.algorithm == "dpo":  # offline, on the export (evaluated on its X.test.jsonl companion)
        values = {"seed": cfg.seed, **cfg.align, **fixed, "data": str(data)}
    else:  # the project's prompts, sampled from the policy
        values = {"seed": cfg.seed, **cfg.align, **fixed, "reward_model": reward_model, "prompts": None,
                  "store": cfg.store, "project": cfg.project}
    return run_trainer(TRAINERS[cfg.algorithm], values, cfg.launch, out / "policy.yaml")


def evaluate_policy(cfg: RoundConfig, policy: str, reward_model: str, out: Path) -> dict:
    """Step 7: `align eval` of the new policy against the reference; writes eval.json, samples.jsonl and the plot."""
    from align.evaluation.eval_config import EvalConfig
    from align.evaluation.evaluate import evaluate_to_dir, format_report

    eval_cfg = EvalConfig(**{"seed": cfg.seed, **cfg.evaluate, "policies": [policy], "reference": cfg.reference,
                             "prompts": cfg.eval_prompts, "reward_model": reward_model, "gold": cfg.gold,
                             "output_dir": str(out / "eval")})
    report = evaluate_to_dir(eval_cfg, progress=False)
    print(format_report(report))
    return report


def _win_summary(row: dict) -> str:
    key = "win_rate_gold" if "win_rate_gold" in row else "win_rate_reward"
    w = row[key]
    return f"{key.removeprefix('win_rate_')} win rate {w['rate']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}]"


STEPS = ("generate", "judge", "export", "reward_model", "align", "evaluate")  # what `on_step` is told, in order


def run_round(cfg: RoundConfig, on_step=None) -> dict:
    """Steps 1-8; -> {"round", "policy", "reward_model", "export", "evaluation"}. `on_step(name)` is called
    as each of STEPS ends (a progress bar's hook)."""
    on_step = on_step or (lambda name: None)
    from labeling.db import open_store
    from labeling.importer import import_file
    from labeling.lineage import record
    from loop.round_inputs import check_inputs

    engine = open_store(cfg.store, create=False)
    try:
        password = check_inputs(engine, cfg)  # every input, before anything is written (loop.round_inputs)
        if cfg.prompts:
            import_file(engine, cfg.project, cfg.prompts)
        policy = current_policy(engine, cfg)
        r = policy["round"] + 1
        out = Path(cfg.output_dir) / f"round-{r}"
        out.mkdir(parents=True, exist_ok=True)
        print(f"[prefloop] round {r}: from policy {policy['name']} (round {policy['round']})")
        candidates = generate_and_build(engine, cfg, policy, r)  # 1-2
        on_step("generate")
        collect_judgments(engine, cfg, r, password)  # 3
        on_step("judge")
        data, export_id = export_round(engine, cfg, out, candidates, r)  # 4
        on_step("export")
        rm_dir, rm_id = train_reward_model(engine, cfg, data, out, export_id, r)  # 5
        on_step("reward_model")
        new_policy = str(align_policy(cfg, policy["name"], data, rm_dir, out))  # 6
        on_step("align")
        report = evaluate_policy(cfg, new_policy, rm_dir, out)  # 7
        on_step("evaluate")
        row = report["policies"][-1]  # the final model (a run directory lists its checkpoints first)
        policy_id = record(engine, cfg.project, r, "policy", new_policy, [policy["id"], rm_id, export_id],
                           _run_record(Path(new_policy), _win_summary(row), algorithm=cfg.algorithm))  # 8
        record(engine, cfg.project, r, "evaluation", str(out / "eval" / "eval.json"), [policy_id],
               {"summary": _win_summary(row)})  # the numbers: in eval.json, which the record names
        return {"round": r, "policy": new_policy, "reward_model": rm_dir, "export": str(data), "evaluation": row}
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    from loop.round_report import verdict
    from prefloop.config import parse_config

    result = run_round(parse_config(RoundConfig, argv, prog="align round"))
    print(f"[prefloop] round {result['round']} done: policy {result['policy']}")
    print(f"[prefloop] round {result['round']}: {verdict(result['evaluation'])}")
    return 0
