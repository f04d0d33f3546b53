"""The preference store: SQLModel tables (the data model that ties the packages together).

Prompt -> Candidate -> Task (2..K candidates) -> Assignment (annotator, lease) -> Judgment.
JSON columns hold small structured values (a conversation, a candidate id list, ratings).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, event, text
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 4  # 2: the `artifact` table (the loop's lineage); 3: task.is_full; 4: a judgment closes
# its lease (a trigger); see labeling.migrations.MIGRATIONS
MODES = ("pairwise", "ranking")
ROLES = ("annotator", "admin")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


class Meta(SQLModel, table=True):
    """Key/value facts about the database itself; holds `schema_version`."""

    __tablename__ = "prefloop_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)


class Annotator(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    role: str = Field(default="annotator", max_length=16)  # annotator | admin
    password_hash: str = Field(max_length=256)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class Project(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=128)
    guidelines: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    mode: str = Field(default="pairwise", max_length=16)  # pairwise | ranking
    k: int = 2  # candidates per task (2 for pairwise)
    overlap: int = 1  # distinct annotators per task
    criteria: Optional[list] = _json()  # e.g. ["helpfulness", "harmlessness", "honesty"], rated 1..5
    gold_rate: float = 0.0  # share of served tasks that are gold tasks
    lease_seconds: int = 1800  # an unanswered assignment returns to the queue after this
    is_open: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class ArenaSettings(SQLModel, table=True):
    """What makes a project an arena (labeling.arena): the models that answer live, and the bounds.

    Written only by the admin (`labeling arena create`); a request never names a model, it gets two
    of these. No secrets: an endpoint's API key is read from the environment variable named here.
    """

    __tablename__ = "arena"
    project_id: int = Field(foreign_key="project.id", primary_key=True)
    models: list = Field(sa_column=Column(JSON, nullable=False))  # [{"name", "target", "served"}, ...]
    reveal_models: bool = True  # show which model wrote A and B once the vote is in
    max_new_tokens: int = 256  # per answer
    temperature: float = 0.7
    top_p: float = 1.0
    max_prompt_chars: int = 4000
    per_minute: int = 6  # comparisons one annotator may start per minute
    api_key_env: Optional[str] = Field(default=None, max_length=128)  # env var holding endpoints' bearer token


class Prompt(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    messages: list = Field(sa_column=Column(JSON, nullable=False))  # [{"role", "content"}, ...]
    # sha256 of the conversation (filled in on insert): re-imports dedupe on it.
    digest: Optional[str] = Field(default=None, max_length=64, index=True)
    source: Optional[str] = Field(default=None, max_length=512)
    split: Optional[str] = Field(default=None, max_length=32)
    meta: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow)


def conversation_digest(messages: list) -> str:
    canonical = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@event.listens_for(Prompt, "before_insert")
def _fill_digest(_mapper, _conn, prompt: Prompt) -> None:
    if prompt.digest is None:
        prompt.digest = conversation_digest(prompt.messages)


class Candidate(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    model: str = Field(max_length=256, index=True)
    round: int = 0
    gen_config: Optional[dict] = _json()  # temperature, top_p, max_new_tokens, seed, ...
    created_at: datetime = Field(default_factory=utcnow)


class Task(SQLModel, table=True):
    # The assignment queue's order (labeling.assign): a claim walks ix_task_open from the project's
    # first task that is not full, instead of testing every task of the project and sorting them, or
    # walking past every full one (1 us each, inside the write lock: BENCHMARKS.md, --store-growth).
    __table_args__ = (Index("ix_task_queue", "project_id", text("priority DESC"), "id"),
                      Index("ix_task_open", "project_id", "is_full", text("priority DESC"), "id"))
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    candidate_ids: list = Field(sa_column=Column(JSON, nullable=False))  # 2..K candidate ids
    priority: float = Field(default=0.0, index=True)  # higher is served first
    # A known answer makes this a gold task: {"ranking": [candidate ids, best first]}.
    # Pairwise gold = the two ids, winner first; a judgment is correct iff its winner is ranking[0].
    gold: Optional[dict] = _json()
    round: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    # All `overlap` slots held. Kept by the database's own triggers (labeling.store_triggers) on every
    # change of an assignment's slot and of the project's overlap, whatever code path makes it; the
    # claim still counts the slots itself, so this only lets it skip full tasks in the index.
    is_full: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})


class Assignment(SQLModel, table=True):
    """One annotator's lease on one of a task's `overlap` slots.

    `slot` is unique per task while the lease lives: the database itself refuses a
    second holder of a slot, so concurrent servers cannot exceed the overlap.
    An expired or skipped assignment gives its slot back (slot = NULL).
    """

    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id", name="uq_assignment_task_annotator"),
        UniqueConstraint("task_id", "slot", name="uq_assignment_task_slot"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    slot: Optional[int] = None
    display_order: list = Field(sa_column=Column(JSON, nullable=False))  # candidate ids as shown
    status: str = Field(default="open", max_length=16)  # open | done | skipped | expired
    skip_reason: Optional[str] = Field(default=None, max_length=512)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(default_factory=utcnow, index=True)


class Judgment(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id", name="uq_judgment_task_annotator"),
        UniqueConstraint("client_request_id", name="uq_judgment_request"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    assignment_id: Optional[int] = Field(default=None, foreign_key="assignment.id")
    display_order: list = Field(sa_column=Column(JSON, nullable=False))  # candidate ids, A first
    choice: Optional[str] = Field(default=None, max_length=32)  # see labeling.choices.CHOICES
    ranking: Optional[list] = _json()  # best-first candidate ids (ranking projects)
    ratings: Optional[dict] = _json()  # {criterion: {candidate_id: 1..5}}
    rationale: Optional[str] = Field(default=None, sa_column=Column(Text))
    edited_response: Optional[str] = Field(default=None, sa_column=Column(Text))
    ms_spent: Optional[int] = None
    client_request_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Artifact(SQLModel, table=True):
    """One step of the loop's lineage (labeling.lineage): what a round made and what it was made from.

    kind: policy | candidates | export | reward_model | evaluation. `parents` holds the ids of
    the artifacts it came from; `details` its facts (snapshot, counts, metrics, config).
    """

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    round: int = 0
    kind: str = Field(max_length=32)
    name: str = Field(max_length=1024)  # model path or id, export file, ...
    parents: Optional[list] = _json()
    details: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow)
