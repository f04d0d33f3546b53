"""What every handler needs, passed explicitly: no module-level mutable state in the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from labeling.app.login import ThrottlePolicy
from labeling.arena_pool import ArenaRuntime
from labeling.app.service import OpenTasks


@dataclass(frozen=True)
class AppContext:
    engine: Engine
    default_project: str | None = None  # preselected project on the annotator page
    export_dir: Path | None = None  # where admin exports are written (a fresh temp dir if None)
    login_policy: ThrottlePolicy = ThrottlePolicy()  # back-off and lock-out of failed sign-ins
    open_tasks: OpenTasks = field(default_factory=OpenTasks)  # shared, briefly cached count for progress
    arena: ArenaRuntime = field(default_factory=ArenaRuntime)  # arena projects' worker pool and limits
