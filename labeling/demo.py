"""`labeling demo`: a whole project on the embedded model, then the labeling app.

Creates ./demo/prefloop.db with a demo project, imports the demo prompts, samples
candidates with SmolLM2-135M-Instruct, builds comparison tasks, creates two demo
accounts, prints a summary and the credentials, and serves the app. Re-running it
reuses everything already there (generation is resumable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from prefloop.config import parse_config

GUIDELINES = """\
**Compare the two responses** to the conversation and pick the better one.

- Prefer responses that are *correct*, *helpful* and *honest*; penalise made-up facts.
- Judge the content, not the length: a short right answer beats a long wrong one.
- Use **tie** when neither is clearly better and **both bad** when neither is acceptable.
- If you can write a better answer, put it in *ideal response*: it becomes training data.
"""
DEMO_USERS = (("admin", "admin-demo-pass", "admin"), ("annotator", "annotator-demo-pass", "annotator"))


@dataclass
class DemoConfig:
    """Run the demo project end to end on the embedded model."""

    dir: str = field(default="demo", metadata={"help": "folder for the demo database"})
    model: str = field(default="smollm2-135m-instruct", metadata={"help": "model generating the candidates"})
    num_generations: int = field(default=2, metadata={"help": "candidates per prompt", "short": "-n", "aliases": ("n",)})
    max_new_tokens: int = field(default=96, metadata={"help": "response length limit"})
    serve: bool = field(default=True, metadata={"help": "start the labeling app afterwards"})
    host: str = field(default="127.0.0.1", metadata={"help": "address the app listens on"})
    port: int = field(default=7860, metadata={"help": "port the app listens on"})


def main(argv: list[str]) -> int:
    from labeling.db import open_store

    cfg = parse_config(DemoConfig, argv, prog="labeling demo")
    Path(cfg.dir).mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{Path(cfg.dir).resolve() / 'prefloop.db'}"
    engine = open_store(url)
    setup_project(engine, cfg)
    print(summary(engine))
    print(f"\nstore: {url}")
    for name, password, role in DEMO_USERS:
        print(f"demo {role:<9}  user: {name:<10} password: {password}")
    if cfg.serve:
        from labeling.serve import serve

        print(f"\nlabeling app: http://{cfg.host}:{cfg.port}/  (log in with a demo account above; Ctrl+C stops it)")
        serve(engine, host=cfg.host, port=cfg.port)
    return 0


def setup_project(engine, cfg: DemoConfig) -> None:
    from labeling.db import session_scope
    from labeling.generate import generate_candidates
    from labeling.importer import import_file
    from labeling.models import Annotator, Project
    from labeling.projects import create_project
    from labeling.tasks import build_tasks
    from labeling.users import create_user
    from prefloop.generation import SamplingConfig
    from sqlmodel import select

    with session_scope(engine) as session:
        if session.exec(select(Project).where(Project.name == "demo")).first() is None:
            create_project(session, "demo", guidelines=GUIDELINES, overlap=2,
                           criteria=["helpfulness", "harmlessness", "honesty"])
        for name, password, role in DEMO_USERS:
            if session.exec(select(Annotator).where(Annotator.name == name)).first() is None:
                create_user(session, name, password, role)
    prompts = resources.files("labeling") / "demo_prompts.jsonl"
    with resources.as_file(prompts) as path:
        print(f"import: {import_file(engine, 'demo', path)}")
    from prefloop.hardware import detect

    print(f"hardware: {detect().describe()}")  # as `labeling generate` prints it
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.8, top_p=0.95, seed=0)
    print(generate_candidates(engine, "demo", cfg.model, n=cfg.num_generations, sampling=sampling, batch_size=8))
    print(f"tasks: {build_tasks(engine, 'demo', 'all_pairs')} added")


def summary(engine) -> str:
    from labeling.stats import format_stats, project_stats

    return format_stats(project_stats(engine, "demo"))
