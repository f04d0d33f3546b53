"""Arena projects: two anonymous models answer the annotator's own prompt live, and the vote is ordinary data.

An arena project is a pairwise project with an `ArenaSettings` row: its models and its bounds.
A finished comparison is stored as what every other part of prefloop already reads: a Prompt (one
user turn), two Candidates (model name, settings, generation time in `gen_config`), a Task over
them and an Assignment of that task to the annotator, in one transaction (`store_battle`). The vote
then goes through `answers.submit_judgment` like any other, so stats, agreement, the leaderboard,
export and `reward-model train --store` use arena judgments unchanged.

Model specs (admin only): `NAME=TARGET` or `TARGET`, where TARGET is a local model directory, an HF
id or the embedded default (generated in the server's worker pool), or the base URL of an
OpenAI-compatible chat endpoint, `http(s)://HOST:PORT/v1`, optionally `#SERVED_MODEL` (the `model`
field sent; default: NAME).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labeling.db import get_project, session_scope
from labeling.importer import MAX_MESSAGE_CHARS, add_candidate, find_prompt
from labeling.models import ArenaSettings, Assignment, Judgment, Project, Prompt, Task, utcnow
from prefloop.errors import InputError, NotFoundError

MAX_NEW_TOKENS = 4096  # the most an admin may allow per answer
MAX_PER_MINUTE = 600
ARENA_SOURCE = "arena"  # Prompt.source of typed prompts


@dataclass(frozen=True)
class ModelSpec:
    name: str  # stored as Candidate.model, shown after the vote (if the project says so)
    target: str  # local dir / HF id / embedded name, or an endpoint's base URL
    served: str | None = None  # endpoints: the `model` field of the request

    @property
    def is_endpoint(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    def as_dict(self) -> dict:
        return {"name": self.name, "target": self.target, "served": self.served}


def parse_model_spec(text: str) -> ModelSpec:
    """`NAME=TARGET` or `TARGET`; an endpoint TARGET may end in `#SERVED_MODEL`."""
    text = (text or "").strip()
    name, sep, target = text.partition("=")
    if not sep or name.startswith(("http://", "https://")) or "/" in name:
        name, target = "", text
    target, _, served = target.partition("#") if target.startswith(("http://", "https://")) else (target, "", "")
    target = target.rstrip("/") if target.startswith("http") else target
    name = (name or (served if served else target)).strip()
    if not target or not name:
        raise InputError(f"model {text!r}: expected NAME=TARGET or TARGET")
    if len(name) > 256:
        raise InputError(f"model {text!r}: a name of at most 256 characters")
    return ModelSpec(name=name, target=target, served=served or None)


def create_arena(engine: Engine, project_name: str, models: list[str], *, reveal_models: bool = True,
                 max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 1.0,
                 max_prompt_chars: int = 4000, per_minute: int = 6, api_key_env: str | None = None,
                 guidelines: str = "", criteria: list[str] | None = None) -> ArenaSettings:
    """Make `project_name` an arena (creating the pairwise project if it does not exist yet)."""
    from labeling.projects import create_project

    specs = [parse_model_spec(m) for m in models]
    if len(specs) < 2:
        raise InputError("arena: at least two models (--models A B)")
    if len({s.name for s in specs}) != len(specs):
        raise InputError(f"arena: model names must differ ({', '.join(s.name for s in specs)})")
    _check_bounds(max_new_tokens, temperature, top_p, max_prompt_chars, per_minute)
    with session_scope(engine) as session:
        project = session.exec(select(Project).where(Project.name == project_name)).first()
        if project is None:
            project = create_project(session, project_name, guidelines=guidelines, criteria=criteria)
        if project.mode != "pairwise":
            raise InputError(f"project {project_name!r} ranks K={project.k}: an arena compares two answers")
        settings = session.get(ArenaSettings, project.id) or ArenaSettings(project_id=project.id, models=[])
        settings.models = [s.as_dict() for s in specs]
        for key, value in dict(reveal_models=reveal_models, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_p=top_p, max_prompt_chars=max_prompt_chars, per_minute=per_minute,
                               api_key_env=api_key_env).items():
            setattr(settings, key, value)
        session.add(settings)
        session.flush()
        session.expunge(settings)
        return settings


def _check_bounds(max_new_tokens, temperature, top_p, max_prompt_chars, per_minute) -> None:
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens={max_new_tokens}: 1..{MAX_NEW_TOKENS}")
    if not temperature > 0 or not 0 < top_p <= 1:
        raise InputError(f"temperature={temperature}, top_p={top_p}: temperature > 0 and top_p in (0, 1]")
    if not 1 <= max_prompt_chars <= MAX_MESSAGE_CHARS:
        raise InputError(f"max_prompt_chars={max_prompt_chars}: 1..{MAX_MESSAGE_CHARS}")
    if not 1 <= per_minute <= MAX_PER_MINUTE:
        raise InputError(f"per_minute={per_minute}: 1..{MAX_PER_MINUTE}")


def arena_settings(engine: Engine, project_name: str) -> ArenaSettings:
    with Session(engine) as session:
        project = get_project(session, project_name)
        settings = session.get(ArenaSettings, project.id)
        if settings is None:
            raise NotFoundError(f"project {project_name!r} is not an arena (`labeling arena create`)")
        session.expunge(settings)
        return settings


def project_criteria(engine: Engine, project_name: str) -> list[str]:
    with Session(engine) as session:
        return list(get_project(session, project_name).criteria or [])


def project_guidelines(engine: Engine, project_name: str) -> str:
    with Session(engine) as session:
        return get_project(session, project_name).guidelines or ""


def arena_projects(engine: Engine, include_closed: bool = False) -> list[str]:
    with Session(engine) as session:
        query = select(Project.name).join(ArenaSettings, ArenaSettings.project_id == Project.id).order_by(Project.id)
        if not include_closed:
            query = query.where(Project.is_open == True)  # noqa: E712 - SQL expression
        return list(session.exec(query).all())


def model_specs(settings: ArenaSettings) -> list[ModelSpec]:
    return [ModelSpec(**m) for m in settings.models]


def pick_pair(settings: ArenaSettings, rng: random.Random | None = None) -> tuple[ModelSpec, ModelSpec]:
    """Two different registered models in random order: the first answers as A."""
    a, b = (rng or random.SystemRandom()).sample(model_specs(settings), 2)
    return a, b


def check_prompt(settings: ArenaSettings, text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("type a prompt first (or take the project's next one)")
    if len(text) > settings.max_prompt_chars:
        raise InputError(f"prompt: {len(text)} characters, at most {settings.max_prompt_chars} in this arena")
    return text


def next_prompt(engine: Engine, project_name: str, annotator_id: int) -> str | None:
    """The text of the project's first single-turn prompt this annotator has not judged yet; None if none."""
    with Session(engine) as session:
        project = get_project(session, project_name)
        judged = (select(Task.prompt_id).join(Judgment, Judgment.task_id == Task.id)
                  .where(Task.project_id == project.id, Judgment.annotator_id == annotator_id))
        for messages in session.exec(select(Prompt.messages).where(Prompt.project_id == project.id,
                                                                     Prompt.id.not_in(judged)).order_by(Prompt.id)):
            if len(messages) == 1 and messages[0].get("role") == "user":
                return str(messages[0].get("content", ""))
        return None


@dataclass(frozen=True)
class Answer:
    """One model's finished answer and how it was made (stored in Candidate.gen_config)."""

    model: ModelSpec
    text: str
    tokens: int
    seconds: float  # from the start of generation to its end (queue wait excluded)
    first_token_s: float | None
    finished: bool  # ended by the model (EOS), not by max_new_tokens

    def gen_config(self, settings: ArenaSettings) -> dict:
        return {"arena": True, "backend": "endpoint" if self.model.is_endpoint else "local",
                "served": self.model.served, "max_new_tokens": settings.max_new_tokens,
                "temperature": settings.temperature, "top_p": settings.top_p, "tokens": self.tokens,
                "seconds": round(self.seconds, 4), "first_token_s": None if self.first_token_s is None
                else round(self.first_token_s, 4), "finished": self.finished}


def store_battle(engine: Engine, project_name: str, annotator_id: int, prompt: str, a: Answer, b: Answer,
                 settings: ArenaSettings) -> Assignment:
    """Prompt, both candidates, a task and the annotator's assignment to it (A shown first), in one transaction.

    The assignment takes the task's first slot, so that the regular queue serves it only to the
    project's further `overlap - 1` annotators, and lapses after the project's lease like any other.
    """
    for answer in (a, b):
        if not answer.text.strip():
            raise InputError("an answer came back empty; nothing was stored (ask again)")
    messages = [{"role": "user", "content": prompt}]
    with session_scope(engine) as session:
        project = get_project(session, project_name)
        if not project.is_open:
            raise InputError(f"project {project_name!r} is closed")
        row = find_prompt(session, project.id, messages)
        if row is None:
            row = Prompt(project_id=project.id, messages=messages, source=ARENA_SOURCE)
            session.add(row)
            session.flush()
        ids = [_candidate_id(session, row.id, answer, settings) for answer in (a, b)]
        task = Task(project_id=project.id, prompt_id=row.id, candidate_ids=ids)
        session.add(task)
        session.flush()
        at = utcnow()
        assignment = Assignment(task_id=task.id, annotator_id=annotator_id, slot=0, display_order=ids,
                                status="open", created_at=at, expires_at=at + timedelta(seconds=project.lease_seconds))
        session.add(assignment)
        session.flush()
        session.expunge(assignment)
        return assignment


def _candidate_id(session: Session, prompt_id: int, answer: Answer, settings: ArenaSettings) -> int:
    """A new candidate, or the one already stored with the same text from the same model (add_candidate dedupes)."""
    from labeling.models import Candidate

    text = answer.text.strip()
    added = add_candidate(session, prompt_id, text, answer.model.name, 0, answer.gen_config(settings))
    if added is not None:
        return added.id
    return session.exec(select(Candidate.id).where(Candidate.prompt_id == prompt_id, Candidate.text == text,
                                                   Candidate.model == answer.model.name)).first()
