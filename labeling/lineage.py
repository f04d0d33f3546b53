"""The loop's lineage: every round's policy, candidates, export snapshot, reward model and evaluation,
each recorded with what it was made from, so `labeling stats` can show

    round 0  policy        smollm2-135m-instruct
    round 1  candidates    40 from 2 models                       <- policy #1
    round 1  export        runs/loop/round-1/pairs.jsonl (38 rows) <- candidates #2
    round 1  reward_model  runs/loop/round-1/reward_model          <- export #3
    round 1  policy        runs/loop/round-1/policy/final          <- policy #1, reward_model #4, export #3
    round 1  evaluation    win rate 0.71 [0.62, 0.79] (gold)       <- policy #5

The records are written through these functions only (the round runner in `loop.round` calls
them); they never change, so a lineage is an append-only history with typed rows.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import select

from labeling.db import get_project, session_scope
from labeling.models import Artifact

KINDS = ("policy", "candidates", "export", "reward_model", "evaluation")


def record(engine: Engine, project_name: str, round: int, kind: str, name: str, parents: list[int] = (),
           details: dict | None = None) -> int:
    """Add one lineage record; -> its id."""
    if kind not in KINDS:
        raise ValueError(f"lineage kind {kind!r}: expected one of {', '.join(KINDS)}")
    with session_scope(engine) as session:
        project = get_project(session, project_name)
        known = {a.id for a in session.exec(select(Artifact).where(Artifact.project_id == project.id))}
        missing = [p for p in parents if p not in known]
        if missing:
            raise ValueError(f"lineage parents {missing}: no such records in project {project_name!r}")
        artifact = Artifact(project_id=project.id, round=round, kind=kind, name=name, parents=list(parents),
                            details=details or {})
        session.add(artifact)
        session.flush()
        return artifact.id


def lineage(engine: Engine, project_name: str) -> list[dict]:
    """Every record of the project, oldest first."""
    with session_scope(engine, immediate=False) as session:
        project = get_project(session, project_name)
        rows = session.exec(select(Artifact).where(Artifact.project_id == project.id).order_by(Artifact.id))
        return [{"id": a.id, "round": a.round, "kind": a.kind, "name": a.name, "parents": a.parents or [],
                 "details": a.details or {}, "created_at": a.created_at.isoformat()} for a in rows]


def latest(engine: Engine, project_name: str, kind: str) -> dict | None:
    """The most recent record of a kind (the current policy: latest(engine, project, "policy"))."""
    rows = [r for r in lineage(engine, project_name) if r["kind"] == kind]
    return rows[-1] if rows else None


def parents_text(record: dict, kinds: dict[int, str]) -> str:
    """A record's parents as "policy #1, export #3"; kinds: {id: kind} of the project's records."""
    return ", ".join(f"{kinds.get(p, '?')} #{p}" for p in record["parents"])


def format_lineage(rows: list[dict]) -> str:
    kinds = {r["id"]: r["kind"] for r in rows}
    lines = ["  lineage:"]
    for r in rows:
        parents = parents_text(r, kinds)
        summary = r["details"].get("summary", "")
        lines.append(f"    #{r['id']:<3} round {r['round']:<3} {r['kind']:<13} {r['name']}"
                     + (f"  ({summary})" if summary else "") + (f"  <- {parents}" if parents else ""))
    return "\n".join(lines)
