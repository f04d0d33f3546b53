"""A hand-checked preference store (pairwise tasks, votes, a gold task) shared by the export, stats and
trainer tests: every expected export row can be computed by hand (see `build_pairwise_store`)."""

from __future__ import annotations

from labeling.db import session_scope
from labeling.judgments import record_judgment
from labeling.models import Annotator, Candidate, Project, Prompt, Task

ANNOTATORS = ("alice", "bob", "carol", "dave")


def add_store_rows(engine, *, mode="pairwise", k=2, overlap=3, prompts=6, models=("m-good", "m-bad"),
                   name="p"):
    """A project with annotators, prompts and candidates (candidate text = '<model> answer <i>').

    Returns {"annotators": {name: id}, "prompts": [ids], "cands": {(prompt index, model): id}}.
    """
    with session_scope(engine) as s:
        project = Project(name=name, mode=mode, k=k, overlap=overlap)
        s.add(project)
        users = [Annotator(name=n, password_hash="x") for n in ANNOTATORS]
        s.add_all(users)
        s.flush()
        prompt_rows = [Prompt(project_id=project.id, messages=[{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": f"Question {i}?"}])
                       for i in range(prompts)]
        s.add_all(prompt_rows)
        s.flush()
        cands = {}
        for i, p in enumerate(prompt_rows):
            for m in models:
                c = Candidate(prompt_id=p.id, text=f"{m} answer {i}", model=m, round=1)
                s.add(c)
                s.flush()
                cands[(i, m)] = c.id
        return {"project_id": project.id, "annotators": {u.name: u.id for u in users},
                "prompts": [p.id for p in prompt_rows], "cands": cands}


def add_task(engine, ids, prompt_index, candidate_ids, gold=None, round=1):
    with session_scope(engine) as s:
        task = Task(project_id=ids["project_id"], prompt_id=ids["prompts"][prompt_index],
                    candidate_ids=list(candidate_ids), gold=gold, round=round)
        s.add(task)
        s.flush()
        return task.id


def judge(engine, ids, task_id, who, shown, choice=None, ranking=None, edited=None, ms=1000):
    judge.n = getattr(judge, "n", 0) + 1
    return record_judgment(engine, task_id=task_id, annotator_id=ids["annotators"][who], display_order=list(shown),
                           choice=choice, ranking=ranking, edited_response=edited, ms_spent=ms,
                           client_request_id=f"req-{judge.n}")


def build_pairwise_store(engine) -> dict:
    """Six tasks (one per prompt, m-good vs m-bad; display orders vary) and one gold task.

    task  votes (in candidate terms)                 majority            default export
    T0    alice good(2), bob good(1), carol good(1)  good 3/3, margin 4/3  row
    T1    alice tie, bob tie, carol good(1)           tie 2/3             dropped (ties=drop)
    T2    alice both_bad (+edit), bob both_bad, carol bad  both_bad 2/3    dropped
    T3    alice good, bob bad                         split               dropped
    T4    alice good(1), bob good(1), dave bad(2)     good 2/3, margin 1  row
    T5    dave good(2)                                good 1/1, margin 2  row
    gold  (prompt 0) alice, bob, carol right; dave wrong  -> dave's gold accuracy 0
    """
    ids = add_store_rows(engine)
    g, b = (lambda i: ids["cands"][(i, "m-good")]), (lambda i: ids["cands"][(i, "m-bad")])
    t = [add_task(engine, ids, i, [g(i), b(i)]) for i in range(6)]
    judge(engine, ids, t[0], "alice", [g(0), b(0)], "a_much_better", ms=500)
    judge(engine, ids, t[0], "bob", [b(0), g(0)], "b_better", ms=1500)
    judge(engine, ids, t[0], "carol", [g(0), b(0)], "a_better")
    judge(engine, ids, t[1], "alice", [g(1), b(1)], "tie")
    judge(engine, ids, t[1], "bob", [b(1), g(1)], "tie")
    judge(engine, ids, t[1], "carol", [b(1), g(1)], "b_better")
    judge(engine, ids, t[2], "alice", [g(2), b(2)], "both_bad", edited="An ideal answer 2.")
    judge(engine, ids, t[2], "bob", [g(2), b(2)], "both_bad")
    judge(engine, ids, t[2], "carol", [g(2), b(2)], "b_better")
    judge(engine, ids, t[3], "alice", [b(3), g(3)], "b_better")
    judge(engine, ids, t[3], "bob", [b(3), g(3)], "a_better")
    judge(engine, ids, t[4], "alice", [g(4), b(4)], "a_better")
    judge(engine, ids, t[4], "bob", [b(4), g(4)], "b_better")
    judge(engine, ids, t[4], "dave", [g(4), b(4)], "b_much_better")
    judge(engine, ids, t[5], "dave", [b(5), g(5)], "b_much_better")
    gold = add_task(engine, ids, 0, [g(0), b(0)], gold={"ranking": [g(0), b(0)]})
    for who, choice in [("alice", "a_better"), ("bob", "a_much_better"), ("carol", "a_better"), ("dave", "b_better")]:
        judge(engine, ids, gold, who, [g(0), b(0)], choice)
    return {**ids, "tasks": t, "gold": gold}
