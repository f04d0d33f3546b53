"""The app's actions as Gradio API endpoints, behind the same login as the page.

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/", auth=("ann", "password"))
    task = client.predict("helpfulness", api_name="/next_task")["task"]
    client.predict(task["assignment_id"], task["client_request_id"], "a_better", api_name="/submit")

The same endpoints answer plain JSON at `POST /v1/<name>` (labeling.app.rest, labeling.client).

Annotator endpoints: whoami, projects, next_task, submit, skip, progress.
Admin endpoints (refused to annotators): stats, list_projects, create_project,
set_project_open, export. Each is a thin wrapper over `service` / `admin`, the
same functions the page calls.
"""

from __future__ import annotations

import functools

import gradio as gr

from labeling.app import admin, service
from labeling.app.context import AppContext
from labeling.app.handlers import user_errors, viewer
from labeling.connections import one_read_connection


def register(ctx: AppContext) -> None:
    """Declare the endpoints inside the Blocks being built."""
    for name, fn in endpoints(ctx).items():
        gr.api(user_errors(fn, for_browser=False), api_name=name)


def endpoints(ctx: AppContext) -> dict:
    """name -> fn(request, ...): served as Gradio endpoints here and as `POST /v1/<name>` (labeling.app.rest)."""
    return {fn.__name__: _reads_on_one_connection(ctx, fn) for fn in _annotator_endpoints(ctx) + _admin_endpoints(ctx)}


# The annotator's calls: a few short statements each, and at most one write transaction (what running
# on the event loop requires: labeling.event_loop). The admin's may read a whole project: worker threads.
SHORT_CALLS = frozenset({"whoami", "projects", "next_task", "submit", "progress"})


def on_loop_endpoints(ctx: AppContext) -> frozenset:
    """The endpoints the JSON API runs on the event loop: the short calls on SQLite, none on other databases
    (their every statement is a network round trip, which must not hold up the loop)."""
    return SHORT_CALLS if ctx.engine.dialect.name == "sqlite" else frozenset()


def _reads_on_one_connection(ctx: AppContext, fn):
    """One call's reads share one connection (labeling.connections.one_read_connection)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with one_read_connection(ctx.engine):
            return fn(*args, **kwargs)

    return call


def _annotator_endpoints(ctx: AppContext) -> list:
    engine = ctx.engine

    def whoami(request: gr.Request) -> dict:
        """The signed-in account: name and role."""
        who = viewer(ctx, request)
        return {"name": who.name, "role": who.role}

    def projects(request: gr.Request) -> list:
        """Names of the projects open for labeling."""
        return service.open_projects(engine, viewer(ctx, request))

    def next_task(request: gr.Request, project: str) -> dict:
        """Your current task in the project (resumed or newly assigned): {"task": ... or None, "progress": ...}."""
        who = viewer(ctx, request)
        ctx.open_tasks.ensure(engine, project)  # progress's count, before the claim's write (a wait point)
        view = service.next_task(engine, who, project)
        return {"task": view.public() if view else None,
                "progress": service.progress(engine, who, project, ctx.open_tasks)}

    def submit(request: gr.Request, assignment_id: int, client_request_id: str, choice: str | None = None,
               ranking: list[str] | None = None, ratings: dict[str, dict[str, int | None]] | None = None,
               rationale: str | None = None, edited_response: str | None = None, ms_spent: int | None = None) -> dict:
        """Answer an assignment. choice: a_much_better|a_better|tie|b_better|b_much_better|both_bad;
        ranking: labels best first; ratings: {criterion: {label: 1..5}}. A repeated client_request_id
        returns the first answer instead of recording a second one."""
        return service.submit(engine, viewer(ctx, request), assignment_id=assignment_id,
                              client_request_id=client_request_id, choice=choice, ranking=ranking,
                              ratings=ratings, rationale=rationale, edited_response=edited_response,
                              ms_spent=ms_spent)

    def skip(request: gr.Request, assignment_id: int, reason: str) -> dict:
        """Give an assignment back, with a reason; it is not served to you again."""
        return service.skip(engine, viewer(ctx, request), assignment_id, reason)

    def progress(request: gr.Request, project: str) -> dict:
        """Your judgments today and in total, and the tasks still open to you."""
        return service.progress(engine, viewer(ctx, request), project, ctx.open_tasks)

    return [whoami, projects, next_task, submit, skip, progress]


def _admin_endpoints(ctx: AppContext) -> list:
    engine = ctx.engine

    def stats(request: gr.Request, project: str) -> dict:
        """Progress, timing, agreement, gold accuracy and position bias of a project (admins)."""
        return admin.stats(engine, viewer(ctx, request), project)

    def list_projects(request: gr.Request) -> list:
        """Every project with its settings and counts (admins)."""
        return admin.project_rows(engine, viewer(ctx, request))

    def create_project(request: gr.Request, name: str, mode: str = "pairwise", k: int = 2, overlap: int = 1,
                       criteria: list[str] | None = None, gold_rate: float = 0.0, lease_seconds: int = 1800,
                       guidelines: str = "") -> dict:
        """Create a project (admins)."""
        return admin.create_project(engine, viewer(ctx, request), name, guidelines=guidelines, mode=mode, k=k,
                                    overlap=overlap, criteria=criteria, gold_rate=gold_rate,
                                    lease_seconds=lease_seconds)

    def set_project_open(request: gr.Request, project: str, is_open: bool) -> dict:
        """Open or close a project for labeling (admins)."""
        return admin.set_project_open(engine, viewer(ctx, request), project, is_open)

    def export(request: gr.Request, project: str, fmt: str = "pairwise") -> list:
        """The project's preference records: pairwise | ranking | sft | raw (admins)."""
        return admin.export(engine, viewer(ctx, request), project, fmt)

    return [stats, list_projects, create_project, set_project_open, export]
