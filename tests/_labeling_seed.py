"""Small stores for the assignment and app tests: a project, prompts, candidates, tasks, users.

Rows are written directly through the tables (the importer and task builder have their
own tests); every candidate's model name starts with "secret-model-" so tests can
prove that model names never reach an annotator.
"""

from __future__ import annotations

from labeling.db import session_scope
from labeling.models import Candidate, Prompt, Task
from labeling.projects import create_project
from labeling.users import create_user

PASSWORD = "correct-horse-9"


def seed_project(engine, name="p", *, n_tasks=6, n_gold=0, overlap=1, mode="pairwise", k=2, criteria=None,
                 gold_rate=0.0, lease_seconds=1800, guidelines="Pick the more helpful answer.",
                 conversation=None, responses=None) -> list[int]:
    """A project with `n_tasks` regular and `n_gold` gold tasks; returns the task ids (regular first)."""
    with session_scope(engine) as session:
        project = create_project(session, name, guidelines=guidelines, mode=mode, k=k, overlap=overlap,
                                 criteria=criteria, gold_rate=gold_rate, lease_seconds=lease_seconds)
        task_ids = []
        for i in range(n_tasks + n_gold):
            messages = conversation or [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}]
            prompt = Prompt(project_id=project.id, messages=messages)
            session.add(prompt)
            session.flush()
            texts = responses or [f"Answer {j} to question {i}: `{2 * i + j}`" for j in range(project.k)]
            cands = [Candidate(prompt_id=prompt.id, text=t, model=f"secret-model-{j}") for j, t in enumerate(texts)]
            session.add_all(cands)
            session.flush()
            gold = {"choice": "a_better"} if i >= n_tasks else None
            task = Task(project_id=project.id, prompt_id=prompt.id, candidate_ids=[c.id for c in cands],
                        gold=gold, priority=0.0)
            session.add(task)
            session.flush()
            task_ids.append(task.id)
    return task_ids


def seed_users(engine, names, role="annotator") -> dict[str, int]:
    ids = {}
    with session_scope(engine) as session:
        for name in names:
            ids[name] = create_user(session, name, PASSWORD, role=role).id
    return ids
