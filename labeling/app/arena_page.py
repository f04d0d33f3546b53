"""The arena page: type a prompt (or take the project's next one), watch two anonymous models answer, vote.

The answers stream into the same A/B cards as the annotator page (render.responses_html: sanitised
markdown, never live HTML). Once both are in, the comparison is stored as an ordinary task assigned to
this annotator (labeling.arena.store_battle) and the vote is saved by `service.submit`, the one way a
vote is saved. Model names stay on the server until the vote is in; the project says whether they
are shown then. The send handler is a generator that Gradio iterates in a worker thread; generation
itself runs in the server's arena pool (labeling.arena_pool).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import gradio as gr

from labeling import arena
from labeling.app import render, service
from labeling.app.annotate import CHOICE_KEYS, _answer
from labeling.app.context import AppContext
from labeling.app.handlers import user_errors, viewer
from labeling.arena_pool import Battle
from labeling.choices import CHOICE_LABELS
from prefloop.errors import InputError

REFRESH_S = 0.1  # how often the streaming answers are sent to the browser


@dataclass
class ArenaPage:
    tab: gr.Tab
    project: gr.Dropdown
    guidelines: gr.HTML
    prompt: gr.Textbox
    take_next: gr.Button
    send: gr.Button
    status: gr.Markdown
    responses: gr.HTML
    controls: gr.Column
    choice: gr.Radio
    ratings: gr.Dataframe
    rationale: gr.Textbox
    edited: gr.Textbox
    vote: gr.Button
    reveal: gr.Markdown
    state: gr.State  # the stored comparison: assignment, request id, criteria, the two model names (server side)

    def battle_outputs(self) -> list:
        return [self.state, self.responses, self.controls, self.choice, self.ratings, self.rationale, self.edited,
                self.status, self.reveal]


def build(ctx: AppContext, tab: gr.Tab) -> ArenaPage:
    project = gr.Dropdown(label="Arena project", choices=[], elem_id="pl-arena-project")
    with gr.Accordion("Guidelines", open=False, elem_id="pl-arena-guidelines"):
        guidelines = gr.HTML(js_on_load=None)
    prompt = gr.Textbox(label="Your prompt", lines=3, elem_id="pl-arena-prompt",
                        placeholder="Ask anything; two anonymous models answer side by side.")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="pl-arena-send", scale=2)
        take_next = gr.Button("Take the project's next prompt", elem_id="pl-arena-next", scale=1)
    status = gr.Markdown(elem_id="pl-arena-status")
    responses = gr.HTML(js_on_load=None, elem_id="pl-arena-responses")
    with gr.Column(visible=False) as controls:
        choice = gr.Radio([(f"{CHOICE_LABELS[c]} ({k})", c) for c, k in CHOICE_KEYS.items()],
                          label="Which response is better?", elem_id="pl-arena-choice")
        ratings = gr.Dataframe(label="Ratings 1-5 per criterion (optional)", interactive=True, visible=False,
                               elem_id="pl-arena-ratings", static_columns=[0])
        rationale = gr.Textbox(label="Why? (optional)", lines=2, elem_id="pl-arena-rationale")
        edited = gr.Textbox(label="Edited ideal response (optional)", lines=4, elem_id="pl-arena-edited")
        vote = gr.Button("Vote", variant="primary", elem_id="pl-arena-vote")
    reveal = gr.Markdown(elem_id="pl-arena-reveal")
    return ArenaPage(tab, project, guidelines, prompt, take_next, send, status, responses, controls, choice, ratings,
                     rationale, edited, vote, reveal, gr.State(None))


def wire(ctx: AppContext, demo: gr.Blocks, page: ArenaPage) -> None:
    private = dict(api_visibility="private")
    runtime = ctx.arena

    @user_errors
    def on_load(request: gr.Request):
        projects = _projects(ctx, viewer(ctx, request))
        first = projects[0] if projects else None
        return (gr.update(visible=bool(projects)), gr.update(choices=projects, value=first),
                render.markdown_html(arena.project_guidelines(ctx.engine, first)) if first else "")

    @user_errors
    def on_project(project, request: gr.Request):
        _check_project(ctx, viewer(ctx, request), project)
        return render.markdown_html(arena.project_guidelines(ctx.engine, project))

    @user_errors
    def on_next(project, request: gr.Request):
        who = viewer(ctx, request)
        _check_project(ctx, who, project)
        text = arena.next_prompt(ctx.engine, project, who.id)
        return (text or gr.update()), render.text_html("" if text else "No prompt left in this project: type your own.")

    @user_errors
    def on_send(project, prompt, request: gr.Request):
        who = viewer(ctx, request)
        _check_project(ctx, who, project)
        settings = arena.arena_settings(ctx.engine, project)
        text = arena.check_prompt(settings, prompt)
        runtime.limits.admit(who.name, settings.per_minute)
        a, b = arena.pick_pair(settings)
        battle = Battle.start(runtime.pool, runtime.backends, settings, text, a, b)
        runtime.limits.replace(who.name, battle)  # one comparison per annotator: a second tab's ends the first
        runtime.track(request.session_hash, battle)
        try:
            shown = None
            while not battle.done:
                battle.wait(REFRESH_S)
                now = (battle.texts, battle.positions)
                if now != shown:
                    shown = now
                    yield _streaming(*now)
            answers = battle.answers()
            assignment = arena.store_battle(ctx.engine, project, who.id, text, *answers, settings)
            yield _stored(settings, arena.project_criteria(ctx.engine, project), assignment, answers)
        finally:  # finished, failed, or the generator closed with its tab: the models stop either way
            runtime.limits.release(who.name, battle)
            runtime.track(request.session_hash, None)

    @user_errors
    def on_vote(state, choice, ratings, rationale, edited, request: gr.Request):
        who = viewer(ctx, request)
        service.submit(ctx.engine, who, **_answer(state, choice, "", ratings, rationale, edited))
        reveal = (f"Thanks! A was **{render.text_html(state['models'][0])}**, "
                  f"B was **{render.text_html(state['models'][1])}**." if state["reveal"] else "Thanks!")
        return (None, gr.update(), gr.update(visible=False), None, gr.update(), "", "",
                render.text_html("Saved. Type the next prompt."), reveal)

    def on_unload(request: gr.Request):
        runtime.session_closed(request.session_hash)

    demo.load(on_load, None, [page.tab, page.project, page.guidelines], **private)
    page.project.input(on_project, page.project, page.guidelines, **private)
    page.take_next.click(on_next, page.project, [page.prompt, page.status], **private)
    # A streaming handler holds one of the web server's worker threads while it runs: the app's concurrency
    # (`labeling serve --concurrency`, below --max-threads) bounds them, and Gradio queues further Sends
    # (its own queue position shows on the outputs) while the arena pool queues the answers.
    page.send.click(on_send, [page.project, page.prompt], page.battle_outputs(), show_progress="minimal", **private)
    page.vote.click(on_vote, [page.state, page.choice, page.ratings, page.rationale, page.edited],
                    page.battle_outputs(), **private)
    demo.unload(on_unload)


def _projects(ctx: AppContext, who) -> list[str]:
    allowed = set(service.open_projects(ctx.engine, who))
    return [p for p in arena.arena_projects(ctx.engine, include_closed=who.is_admin) if p in allowed]


def _check_project(ctx: AppContext, who, project: str | None) -> None:
    if not project or project not in _projects(ctx, who):
        raise InputError("pick an arena project first")


def _queue_line(positions: tuple[int, int]) -> str:
    waiting = [f"{label}: #{pos}" for label, pos in zip("AB", positions) if pos]
    return ("Waiting for a free model slot (" + ", ".join(waiting) + " in the queue)…") if waiting else "Answering…"


def _streaming(texts: tuple[str, str], positions: tuple[int, int]) -> tuple:
    return (None, render.responses_html(list(texts)), gr.update(visible=False), None, gr.update(), "", "",
            render.text_html(_queue_line(positions)), "")


def _stored(settings, criteria: list[str], assignment, answers) -> tuple:
    state = {"assignment_id": assignment.id, "client_request_id": uuid.uuid4().hex, "mode": "pairwise",
             "criteria": criteria, "shown_at": time.time(), "models": [a.model.name for a in answers],
             "reveal": settings.reveal_models}
    ratings = gr.update(value={"headers": ["criterion", "A", "B"], "data": [[c, None, None] for c in criteria]},
                        visible=bool(criteria))
    return (state, render.responses_html([a.text for a in answers]), gr.update(visible=True), gr.update(value=None),
            ratings, "", "", render.text_html("Both answers are in: which is better?"), "")
