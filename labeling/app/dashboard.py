"""The admin dashboard: progress, throughput, timing, agreement, gold accuracy, position bias; the model
leaderboard and the loop's lineage; projects; export.

The tab is hidden unless the viewer is an admin, and every handler checks the role
again (through `admin.*`), so an annotator gets nothing from it even by calling it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from labeling.app import admin
from labeling.app.auth import require_admin
from labeling.app.context import AppContext
from labeling.app.handlers import user_errors, viewer


@dataclass
class Dashboard:
    project: gr.Dropdown
    refresh: gr.Button
    summary: gr.Markdown
    per_annotator: gr.BarPlot
    per_hour: gr.BarPlot
    gold: gr.BarPlot
    bias: gr.BarPlot
    annotators: gr.Dataframe
    pairs: gr.Dataframe
    board: gr.Dataframe
    board_plot: gr.Plot
    history: gr.Dataframe
    projects: gr.Dataframe
    new: dict  # the "new project" form fields, in on_create's argument order
    create: gr.Button
    target: gr.Dropdown
    open_btn: gr.Button
    close_btn: gr.Button
    export_fmt: gr.Dropdown
    export_btn: gr.Button
    export_file: gr.File

    def stats_outputs(self) -> list:
        return [self.summary, self.per_annotator, self.per_hour, self.gold, self.bias, self.annotators, self.pairs]

    def loop_outputs(self) -> list:
        return [self.board, self.board_plot, self.history]


def build(ctx: AppContext) -> Dashboard:
    with gr.Row():
        project = gr.Dropdown(label="Project", choices=[], scale=3, elem_id="pl-dash-project")
        refresh = gr.Button("Refresh", scale=1, elem_id="pl-dash-refresh")
    summary = gr.Markdown(elem_id="pl-dash-summary")
    with gr.Row():
        per_annotator = gr.BarPlot(x="annotator", y="judgments", title="Judgments per annotator", y_lim=[0, None],
                                   height=260)
        per_hour = gr.BarPlot(x="hour", y="judgments", title="Judgments per hour (UTC)", y_lim=[0, None],
                              height=260)
    with gr.Row():
        gold = gr.BarPlot(x="annotator", y="gold_accuracy", title="Gold accuracy per annotator",
                          y_lim=[0, 1], height=260)
        bias = gr.BarPlot(x="annotator", y="left_rate", title="Left-choice rate per annotator (0.5 = no bias)",
                          y_lim=[0, 1], height=260)
    annotators = gr.Dataframe(label="Annotators", interactive=False, elem_id="pl-dash-annotators")
    pairs = gr.Dataframe(label="Cohen's kappa per annotator pair", interactive=False)
    with gr.Accordion("Models and rounds", open=True):
        # text cells only (no markdown/html datatype): model names and run paths are untrusted
        board = gr.Dataframe(label=f"Leaderboard: Bradley-Terry strength on the Elo scale, "
                                   f"{admin.BOOTSTRAP_ROUNDS}-replicate bootstrap 95 % intervals",
                             interactive=False, elem_id="pl-dash-leaderboard")
        board_plot = gr.Plot(label="Elo with its bootstrap interval", format="png", elem_id="pl-dash-board-plot")
        history = gr.Dataframe(label="Lineage: round 0 policy -> candidates -> export -> reward model -> policy "
                                     "-> round 1 ...", interactive=False, elem_id="pl-dash-lineage")
    with gr.Accordion("Projects", open=True):
        projects = gr.Dataframe(label="Projects", interactive=False, elem_id="pl-dash-projects")
        with gr.Row():
            target = gr.Dropdown(label="Project", choices=[], scale=3, elem_id="pl-dash-target")
            open_btn = gr.Button("Open", scale=1, elem_id="pl-dash-open")
            close_btn = gr.Button("Close", scale=1, elem_id="pl-dash-close")
        # Closed, and its fields made visible by the page's load (see `wire`), not left to Gradio: Gradio builds
        # the contents of an unselected tab and of a closed accordion only when first shown, and a frame or
        # two later writes their stored values back into them, so a number typed the moment the accordion
        # opened went back to its default (in 10 of 10 runs of a repro typing the instant the boxes showed;
        # the text boxes kept their text). A visibility update from the server takes a field off that list.
        # Building the accordion open and closing it on load, as the annotator page does, is no help here:
        # closed before the tab is first shown, it is skipped when the tab is built.
        with gr.Accordion("New project", open=False):
            new = {
                "name": gr.Textbox(label="Name", elem_id="pl-new-name"),
                "mode": gr.Radio(["pairwise", "ranking"], value="pairwise", label="Mode"),
                "k": gr.Number(2, label="Responses per task (k, ranking only)", precision=0),
                "overlap": gr.Number(1, label="Annotators per task (overlap)", precision=0, elem_id="pl-new-overlap"),
                "criteria": gr.Textbox(label="Criteria, comma separated (rated 1-5, optional)"),
                "gold_rate": gr.Slider(0, 0.9, 0, step=0.05, label="Share of gold tasks served"),
                "lease_seconds": gr.Number(1800, label="Lease (seconds)", precision=0, elem_id="pl-new-lease"),
                "guidelines": gr.Textbox(label="Guidelines (markdown)", lines=4),
            }
            create = gr.Button("Create project", variant="primary", elem_id="pl-new-create")
    with gr.Accordion("Export", open=True):
        with gr.Row():
            export_fmt = gr.Dropdown(list(admin.EXPORT_FORMATS), value="pairwise", label="Format", scale=2)
            export_btn = gr.Button("Export project", scale=1, elem_id="pl-dash-export")
        export_file = gr.File(label="Download", interactive=False, elem_id="pl-dash-file")
    return Dashboard(project, refresh, summary, per_annotator, per_hour, gold, bias, annotators, pairs, board,
                     board_plot, history, projects, new, create, target, open_btn, close_btn, export_fmt, export_btn,
                     export_file)


PRIVATE = dict(api_visibility="private")  # programs use the endpoints in api.py


def wire(ctx: AppContext, demo: gr.Blocks, tab: gr.Tab, dash: Dashboard) -> None:
    project_outputs = [dash.projects, dash.project, dash.target]
    form = list(dash.new.values())

    @user_errors
    def on_load(request: gr.Request):
        who = viewer(ctx, request)
        if not who.is_admin:  # the tab stays hidden and empty
            return (gr.update(visible=False), *[gr.update() for _ in project_outputs + form])
        # visible=True for the new-project fields (already visible): so that Gradio, building them when the
        # accordion first opens, does not write their defaults back over what was typed (see `build`)
        return (gr.update(visible=True), *_projects(ctx, who, None), *[gr.update(visible=True) for _ in form])

    load = demo.load(on_load, None, [tab, *project_outputs, *form], **PRIVATE)
    _wire_project_view(ctx, load, dash, lambda who, project: _stats(admin.stats(ctx.engine, who, project)),
                       dash.stats_outputs(), ("Pick a project.", *[None] * 6))
    _wire_project_view(ctx, load, dash, lambda who, project: _loop(admin.leaderboard(ctx.engine, who, project),
                                                                   admin.lineage(ctx.engine, who, project)),
                       dash.loop_outputs(), (None, None, None))
    _wire_projects(ctx, dash, project_outputs)


def _wire_project_view(ctx: AppContext, load, dash: Dashboard, render, outputs: list, empty: tuple) -> None:
    """Fill `outputs` with render(admin, project) after the page loads, on Refresh and on a new project.

    Each view is its own event, so the slower leaderboard (a bootstrap) never holds up the summary.
    The handlers are plain functions: Gradio runs them in its worker threads, off the event loop."""
    @user_errors
    def on_view(project, request: gr.Request):
        who = require_admin(viewer(ctx, request))
        return render(who, project) if project else empty

    @user_errors
    def on_load_view(project, request: gr.Request):
        if not viewer(ctx, request).is_admin:  # nothing to draw for an annotator, and no error either
            return tuple(gr.update() for _ in outputs)
        return on_view(project, request)

    load.then(on_load_view, dash.project, outputs, **PRIVATE)
    dash.refresh.click(on_view, dash.project, outputs, **PRIVATE)
    dash.project.input(on_view, dash.project, outputs, **PRIVATE)


def _wire_projects(ctx: AppContext, dash: Dashboard, project_outputs: list) -> None:
    @user_errors
    def on_create(project, name, mode, k, overlap, criteria, gold_rate, lease_seconds, guidelines,
                  request: gr.Request):
        who = viewer(ctx, request)
        created = admin.create_project(ctx.engine, who, name, mode=mode, k=k, overlap=overlap, criteria=criteria,
                                       gold_rate=gold_rate, lease_seconds=lease_seconds, guidelines=guidelines)
        gr.Info(f"Created project {html.escape(created['name'])}")
        return _projects(ctx, who, project)

    def set_open(is_open: bool):
        @user_errors
        def handler(target, project, request: gr.Request):
            who = viewer(ctx, request)
            admin.set_project_open(ctx.engine, who, target, is_open)
            return _projects(ctx, who, project)
        return handler

    @user_errors
    def on_export(project, fmt, request: gr.Request):
        return str(admin.export_file(ctx.engine, viewer(ctx, request), project, fmt, ctx.export_dir))

    dash.create.click(on_create, [dash.project, *dash.new.values()], project_outputs, **PRIVATE)
    dash.open_btn.click(set_open(True), [dash.target, dash.project], project_outputs, **PRIVATE)
    dash.close_btn.click(set_open(False), [dash.target, dash.project], project_outputs, **PRIVATE)
    dash.export_btn.click(on_export, [dash.project, dash.export_fmt], dash.export_file, **PRIVATE)


def _projects(ctx: AppContext, who, selected: str | None) -> tuple:
    rows = admin.project_rows(ctx.engine, who)
    names = [r["name"] for r in rows]
    selected = selected if selected in names else (names[0] if names else None)
    return (pd.DataFrame(rows), gr.update(choices=names, value=selected), gr.update(choices=names, value=selected))


def _stats(s: dict) -> tuple:
    """`project_stats` as the summary line, four charts and two tables."""
    columns = ["name", "judgments", "median_ms", "gold_accuracy", "left_rate", "tie_rate"]
    people = pd.DataFrame(s.get("annotators") or [], columns=columns)
    for column in columns[1:]:  # None -> NaN, so the charts see numbers, not categories
        people[column] = pd.to_numeric(people[column], errors="coerce").round(3)
    charts = people.rename(columns={"name": "annotator"})
    hours = pd.DataFrame([[hour[5:13].replace("T", " ") + "h", n] for hour, n in s.get("per_hour") or []],
                         columns=["hour", "judgments"])  # "2025-01-31T14:00:00+00:00" -> "01-31 14h"
    pairs = pd.DataFrame((s.get("agreement") or {}).get("cohen_kappa_pairs") or [], columns=["a", "b", "kappa", "n"])
    pairs["kappa"] = pd.to_numeric(pairs["kappa"], errors="coerce").round(3)
    return (_summary(s), charts[["annotator", "judgments"]], hours, charts[["annotator", "gold_accuracy"]].dropna(),
            charts[["annotator", "left_rate"]].dropna(), people, pairs)


BOARD_COLUMNS = ["rank", "rank range", "model", "Elo", "95 % interval", "win rate", "games", "W-L-T"]
LINEAGE_COLUMNS = ["#", "round", "kind", "name", "summary", "made from"]


def _loop(board: list[dict], records: list[dict]) -> tuple:
    """The leaderboard as a table and a chart, and the lineage as a table (plain text cells)."""
    from labeling.leaderboard import leaderboard_figure
    from labeling.lineage import parents_text

    table = pd.DataFrame([[r["rank"], f"{r.get('rank_lo', r['rank'])}-{r.get('rank_hi', r['rank'])}", r["model"],
                           _num(r["elo"], ".0f"), f"{_num(r.get('elo_lo'), '.0f')} .. {_num(r.get('elo_hi'), '.0f')}",
                           _num(r["win_rate"]), r["games"], f"{r['wins']}-{r['losses']}-{r['ties']}"]
                          for r in board], columns=BOARD_COLUMNS)
    figure = leaderboard_figure(board) if any(r["elo"] is not None for r in board) else None
    kinds = {r["id"]: r["kind"] for r in records}
    history = pd.DataFrame([[r["id"], r["round"], r["kind"], r["name"], r["details"].get("summary", ""),
                             parents_text(r, kinds)] for r in records],
                           columns=LINEAGE_COLUMNS)
    return table, figure, history


def _summary(s: dict) -> str:
    agreement = s.get("agreement") or {}
    models = s.get("models")
    cells = [("Tasks complete", f"{s.get('tasks_complete', 0)} / {s.get('tasks', 0)}"),
             ("Judgments", s.get("judgments", 0)), ("Prompts", s.get("prompts", 0)),
             ("Models", len(models) if isinstance(models, (list, dict)) else models),
             ("Median time", _seconds(s.get("median_ms"))), ("Left-choice rate", _num(s.get("left_choice_rate"))),
             ("Tie rate", _num(s.get("tie_rate"))), ("Fleiss' kappa", _num(agreement.get("fleiss_kappa"))),
             ("Krippendorff's alpha", _num(agreement.get("krippendorff_alpha")))]
    head = "| " + " | ".join(name for name, _ in cells) + " |"
    return "\n".join([head, "|" + "---|" * len(cells), "| " + " | ".join(str(v) for _, v in cells) + " |"])


def _num(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _seconds(ms) -> str:
    return "–" if ms is None else f"{ms / 1000:.1f} s"
