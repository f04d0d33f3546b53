"""The admin dashboard: progress, throughput, timing, agreement, gold accuracy, position bias; projects; export.

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
    with gr.Accordion("Projects", open=True):
        projects = gr.Dataframe(label="Projects", interactive=False, elem_id="pl-dash-projects")
        with gr.Row():
            target = gr.Dropdown(label="Project", choices=[], scale=3, elem_id="pl-dash-target")
            open_btn = gr.Button("Open", scale=1, elem_id="pl-dash-open")
            close_btn = gr.Button("Close", scale=1, elem_id="pl-dash-close")
        with gr.Accordion("New project", open=False):
            new = {
                "name": gr.Textbox(label="Name", elem_id="pl-new-name"),
                "mode": gr.Radio(["pairwise", "ranking"], value="pairwise", label="Mode"),
                "k": gr.Number(2, label="Responses per task (k, ranking only)", precision=0),
                "overlap": gr.Number(1, label="Annotators per task (overlap)", precision=0),
                "criteria": gr.Textbox(label="Criteria, comma separated (rated 1-5, optional)"),
                "gold_rate": gr.Slider(0, 0.9, 0, step=0.05, label="Share of gold tasks served"),
                "lease_seconds": gr.Number(1800, label="Lease (seconds)", precision=0),
                "guidelines": gr.Textbox(label="Guidelines (markdown)", lines=4),
            }
            create = gr.Button("Create project", variant="primary", elem_id="pl-new-create")
    with gr.Accordion("Export", open=True):
        with gr.Row():
            export_fmt = gr.Dropdown(list(admin.EXPORT_FORMATS), value="pairwise", label="Format", scale=2)
            export_btn = gr.Button("Export project", scale=1, elem_id="pl-dash-export")
        export_file = gr.File(label="Download", interactive=False, elem_id="pl-dash-file")
    return Dashboard(project, refresh, summary, per_annotator, per_hour, gold, bias, annotators, pairs, projects, new,
                     create, target, open_btn, close_btn, export_fmt, export_btn, export_file)


PRIVATE = dict(api_visibility="private")  # programs use the endpoints in api.py


def wire(ctx: AppContext, demo: gr.Blocks, tab: gr.Tab, dash: Dashboard) -> None:
    project_outputs = [dash.projects, dash.project, dash.target]

    @user_errors
    def on_load(request: gr.Request):
        who = viewer(ctx, request)
        if not who.is_admin:  # the tab stays hidden and empty
            return (gr.update(visible=False), *[gr.update() for _ in project_outputs])
        return (gr.update(visible=True), *_projects(ctx, who, None))

    load = demo.load(on_load, None, [tab, *project_outputs], **PRIVATE)
    _wire_stats(ctx, load, dash)
    _wire_projects(ctx, dash, project_outputs)


def _wire_stats(ctx: AppContext, load, dash: Dashboard) -> None:
    @user_errors
    def on_stats(project, request: gr.Request):
        who = require_admin(viewer(ctx, request))
        return _stats(admin.stats(ctx.engine, who, project)) if project else ("Pick a project.", *[None] * 6)

    @user_errors
    def on_load_stats(project, request: gr.Request):
        if not viewer(ctx, request).is_admin:  # nothing to draw for an annotator, and no error either
            return tuple(gr.update() for _ in dash.stats_outputs())
        return on_stats(project, request)

    load.then(on_load_stats, dash.project, dash.stats_outputs(), **PRIVATE)
    dash.refresh.click(on_stats, dash.project, dash.stats_outputs(), **PRIVATE)
    dash.project.input(on_stats, dash.project, dash.stats_outputs(), **PRIVATE)


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


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _seconds(ms) -> str:
    return "–" if ms is None else f"{ms / 1000:.1f} s"
