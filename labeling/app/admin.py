"""The admin's use cases, shared by the dashboard and the API; each one checks the role first."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labeling.app.auth import Viewer, require_admin
from labeling.db import get_project, session_scope
from labeling.models import Judgment, Project, Task
from labeling.projects import create_project as _create_project
from labeling.projects import set_open
from prefloop.errors import InputError

EXPORT_FORMATS = ("pairwise", "ranking", "sft", "raw")


def project_rows(engine: Engine, viewer: Viewer) -> list[dict]:
    """One row per project: its settings and how far the labeling got."""
    require_admin(viewer)
    with Session(engine) as session:
        tasks = dict(session.exec(select(Task.project_id, func.count()).group_by(Task.project_id)).all())
        judged = dict(session.exec(select(Task.project_id, func.count()).join(Judgment, Judgment.task_id == Task.id)
                                   .group_by(Task.project_id)).all())
        return [{"name": p.name, "mode": p.mode, "k": p.k, "overlap": p.overlap, "open": p.is_open,
                 "tasks": tasks.get(p.id, 0), "judgments": judged.get(p.id, 0),
                 "criteria": ", ".join(p.criteria or []), "gold_rate": p.gold_rate, "lease_seconds": p.lease_seconds}
                for p in session.exec(select(Project).order_by(Project.id))]


def stats(engine: Engine, viewer: Viewer, project: str) -> dict:
    """`labeling.stats.project_stats` (progress, timing, agreement, gold accuracy, position bias)."""
    require_admin(viewer)
    from labeling.stats import project_stats

    return project_stats(engine, project)


BOOTSTRAP_ROUNDS = 200  # the dashboard's replicates: percentiles of 200 draws, well under a second for a few models


def leaderboard(engine: Engine, viewer: Viewer, project: str, rounds: int = BOOTSTRAP_ROUNDS) -> list[dict]:
    """`labeling.leaderboard.leaderboard`: Bradley-Terry strengths with bootstrap intervals on Elo and rank."""
    require_admin(viewer)
    from labeling.leaderboard import leaderboard as board

    return board(engine, project, rounds=rounds, seed=0)


def lineage(engine: Engine, viewer: Viewer, project: str) -> list[dict]:
    """`labeling.lineage.lineage`: the loop's records (policy, candidates, export, reward model, evaluation)."""
    require_admin(viewer)
    from labeling.lineage import lineage as records

    return records(engine, project)


def create_project(engine: Engine, viewer: Viewer, name: str, *, guidelines: str = "", mode: str = "pairwise",
                   k: int = 2, overlap: int = 1, criteria: list[str] | str | None = None, gold_rate: float = 0.0,
                   lease_seconds: int = 1800) -> dict:
    require_admin(viewer)
    if isinstance(criteria, str):
        criteria = [c.strip() for c in re.split(r"[,\n]", criteria) if c.strip()]
    with session_scope(engine) as session:
        project = _create_project(session, (name or "").strip(), guidelines=guidelines or "", mode=mode, k=int(k),
                                  overlap=int(overlap), criteria=criteria or None, gold_rate=float(gold_rate),
                                  lease_seconds=int(lease_seconds))
        return {"name": project.name, "mode": project.mode, "k": project.k, "overlap": project.overlap,
                "open": project.is_open}


def set_project_open(engine: Engine, viewer: Viewer, name: str, is_open: bool) -> dict:
    require_admin(viewer)
    with session_scope(engine) as session:
        project = set_open(session, get_project(session, name), bool(is_open))
        return {"name": project.name, "open": project.is_open}


def export(engine: Engine, viewer: Viewer, project: str, fmt: str = "pairwise") -> list[dict]:
    """The project's preference data (`labeling.export.export_records`)."""
    require_admin(viewer)
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    from labeling.export import export_records

    with Session(engine) as session:
        get_project(session, project)  # one clear line for an unknown project
    return export_records(engine, project, fmt=fmt)


def export_file(engine: Engine, viewer: Viewer, project: str, fmt: str, out_dir: Path | None = None) -> Path:
    """The export written as JSONL into a fresh directory (for the dashboard's download button).

    Owner-only on disk (directory 0700 from mkdtemp, file 0600; Gradio's cached copy keeps the
    mode), and `labeling.app.guard` serves files to admins only.
    """
    from prefloop.data import write_records

    records = export(engine, viewer, project, fmt)
    directory = Path(tempfile.mkdtemp(prefix="export-", dir=out_dir))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", project)
    path = write_records(records, directory / f"{safe}-{fmt}.jsonl")
    path.chmod(0o600)
    return path
