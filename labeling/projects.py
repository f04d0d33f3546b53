"""Projects: a labeling campaign with its guidelines, mode, overlap and criteria."""

from __future__ import annotations

from sqlmodel import Session, select

from labeling.models import MODES, Project
from prefloop.errors import InputError


MAX_LEASE_SECONDS = 30 * 86_400


def create_project(session: Session, name: str, *, guidelines: str = "", mode: str = "pairwise", k: int = 2,
                   overlap: int = 1, criteria: list[str] | None = None, gold_rate: float = 0.0,
                   lease_seconds: int = 1800) -> Project:
    if not name or len(name) > 128:
        raise InputError("project name: 1-128 characters")
    if mode not in MODES:
        raise InputError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    k = 2 if mode == "pairwise" else k
    if not 2 <= k <= 9:
        raise InputError(f"k={k}: a ranking task compares 2..9 candidates")
    if overlap < 1:
        raise InputError(f"overlap={overlap}: at least one annotator per task")
    if not 0.0 <= gold_rate < 1.0:
        raise InputError(f"gold_rate={gold_rate}: expected a share in [0, 1)")
    if not 10 <= lease_seconds <= MAX_LEASE_SECONDS:  # a lease past the year 9999 is an OverflowError at every claim
        raise InputError(f"lease_seconds={lease_seconds}: 10 seconds to {MAX_LEASE_SECONDS} (30 days)")
    if session.exec(select(Project).where(Project.name == name)).first():
        raise InputError(f"project {name!r} already exists")
    project = Project(name=name, guidelines=guidelines, mode=mode, k=k, overlap=overlap,
                      criteria=list(criteria) if criteria else None, gold_rate=gold_rate,
                      lease_seconds=lease_seconds)
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.exec(select(Project).order_by(Project.id)))


def set_open(session: Session, project: Project, is_open: bool) -> Project:
    project.is_open = is_open
    session.add(project)
    return project
