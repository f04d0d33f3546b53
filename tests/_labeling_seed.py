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
from prefloop.net import free_port

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


def start_server(engine, project=None, **options):
    """A real `labeling serve` (the same `serve()` the CLI calls) in a background thread: (url, app)."""
    from labeling.serve import serve

    port = free_port()
    app = serve(engine, "127.0.0.1", port, project, block=False, quiet=True, **options)
    return f"http://127.0.0.1:{port}/", app


def serve_process(db_url, port, log_path, *extra):
    """`labeling serve` as its own process (python -m labeling.serve); returns it once it answers."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    out = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "labeling.serve", "--store", db_url, "--port", str(port), *extra],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 180  # a loaded 2-core machine has taken over a minute to import gradio
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(Path(log_path).read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"labeling serve did not start within 180 s: {Path(log_path).read_text()[-2000:]}")


def run_event(http, elem_id, data, session_hash, *, load_page=False):
    """Trigger the page's own click event on the element `elem_id` as the signed-in `http` client
    (what the browser does: join the queue, read the event stream); the completion message.

    load_page: first run the page's load events in this session, as a browser does on opening
    the page (they fill per-session state such as the dropdowns' choices).
    """
    config = http.get("config").json()
    if load_page:
        for dep in config["dependencies"]:
            if any(list(t)[1:] == ["load"] for t in dep["targets"]):
                _join_and_wait(http, {"data": [], "fn_index": dep["id"], "session_hash": session_hash})
    button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    fn = next(d for d in config["dependencies"] if [button, "click"] in [list(t) for t in d["targets"]])
    return _join_and_wait(http, {"data": data, "fn_index": fn["id"], "trigger_id": button,
                                 "session_hash": session_hash})


def _join_and_wait(http, body):
    import json

    assert http.post("gradio_api/queue/join", json=body).status_code == 200
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": body["session_hash"]}) as events:
        return next(json.loads(line[5:]) for line in events.iter_lines()
                    if line.startswith("data:") and "process_completed" in line)


def api_client(url, name, password=PASSWORD):
    """A gradio_client acting as one signed-in user (what a simulated annotator script does)."""
    from gradio_client import Client

    # 60 s, not httpx's 5 s: on a loaded 2-core machine a sign-in (Argon2) can queue behind others
    return Client(url, auth=(name, password), verbose=False, analytics_enabled=False, download_files=False,
                  httpx_kwargs={"timeout": 60})
