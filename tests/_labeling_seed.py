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
# Each payload would set window.__pwned or change the title if it ever ran.
PAYLOADS = [
    "<script>window.__pwned = 'script'; document.title = 'PWNED'</script>",
    "<img src=x onerror=\"window.__pwned='img'; document.title='PWNED'\">",
    "<svg onload=\"window.__pwned='svg'\"><circle r=5 /></svg>",
    "[click me](javascript:window.__pwned='link')",
    "[tricky](JaVaScRiPt:window.__pwned='case')",
    "[entity](&#106;avascript:window.__pwned='entity')",
    "<javascript:window.__pwned='autolink'>",
    "[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD0nZGF0YSc8L3NjcmlwdD4=)",
    "[ref link][r]\n\n[r]: javascript:window.__pwned='ref'",
    "<a href=\"javascript:window.__pwned='anchor'\">anchor</a>",
    "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
    "<details open ontoggle=\"window.__pwned='toggle'\">x</details>",
    "![img](x\" onerror=\"window.__pwned='md-img')",
    "<style>body{display:none}</style><b onmouseover=\"window.__pwned='hover'\">hover me</b>",
    "`${window.__pwned='template'}` and ${window.__pwned='template2'}",
    "[titled](https://example.com \"t\\\" onmouseover=\\\"window.__pwned='title'\")",
]


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
            gold = {"ranking": [c.id for c in cands]} if i >= n_tasks else None  # candidate 0 is best
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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(engine, project=None):
    """A real `labeling serve` (the same `serve()` the CLI calls) in a background thread: (url, app)."""
    from labeling.serve import serve

    port = free_port()
    app = serve(engine, "127.0.0.1", port, project, block=False, quiet=True)
    return f"http://127.0.0.1:{port}/", app


def api_client(url, name, password=PASSWORD):
    """A gradio_client acting as one signed-in user (what a simulated annotator script does)."""
    from gradio_client import Client

    return Client(url, auth=(name, password), verbose=False, analytics_enabled=False, download_files=False)
