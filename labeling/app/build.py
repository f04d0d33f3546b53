"""Assemble the app: header, the annotator tab, the admin tab, the API, and the launch arguments."""

from __future__ import annotations

import html
from importlib import resources

import gradio as gr

from labeling.app import annotate, api, arena_page, dashboard
from labeling.app.context import AppContext
from labeling.app.guard import Guard
from labeling.app.handlers import user_errors, viewer
from labeling.app.login import LoginChecker
from labeling.app.render import pygments_css
from labeling.app.rest import Rest

TITLE = "prefloop labeling"


def build_app(ctx: AppContext, concurrency: int = 16) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        header = gr.Markdown(f"### {TITLE}", elem_id="pl-header")
        with gr.Tabs():
            with gr.Tab("Annotate", id="annotate"):
                page = annotate.build(ctx)
            with gr.Tab("Arena", id="arena", visible=False) as arena_tab:
                arena = arena_page.build(ctx, arena_tab)
            with gr.Tab("Dashboard", id="dashboard", visible=False) as dash_tab:
                dash = dashboard.build(ctx)
        api.register(ctx)

        @user_errors
        def on_load(request: gr.Request):
            who = viewer(ctx, request)
            return (f"### {TITLE} · signed in as **{html.escape(who.name)}** ({who.role}) · "
                    "[Log out](logout)")

        demo.load(on_load, None, header, api_visibility="private")
        annotate.wire(ctx, demo, page)
        arena_page.wire(ctx, demo, arena)
        dashboard.wire(ctx, demo, dash_tab, dash)
    # Gradio runs one call per event at a time by default; database locks do the ordering here.
    demo.queue(default_concurrency_limit=concurrency)
    return demo


def launch_kwargs(ctx: AppContext, concurrency: int = 16, proxies_trusted: bool = False) -> dict:
    """Login for every route, the JSON API, our stylesheet and keyboard shortcuts, nothing kept in the browser.

    proxies_trusted: whether `labeling serve --forwarded-allow-ips` names a proxy (the guard says so once
    when it sees X-Forwarded-For that no named proxy sent)."""
    from starlette.middleware import Middleware

    assets = resources.files("labeling.app")  # app.css and keys.js ship as package data
    return dict(
        auth=LoginChecker(ctx.engine, ctx.login_policy).check,  # a coroutine: Argon2 runs off the event loop
        # The guard first (it records the caller's address), then the JSON API (labeling.app.rest).
        app_kwargs={"middleware": [Middleware(Guard, engine=ctx.engine, proxies_trusted=proxies_trusted),
                                   Middleware(Rest, endpoints=api.endpoints(ctx), concurrency=concurrency,
                                              on_loop=api.on_loop_endpoints(ctx))]},
        auth_message="prefloop labeling: sign in with the account your admin created.",
        # System fonts: no request to a font CDN, so annotators' browsers contact nobody else.
        theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                font_mono=["ui-monospace", "Consolas", "monospace"]),
        css=(assets / "app.css").read_text() + pygments_css(),
        head=f"<script>{(assets / 'keys.js').read_text()}</script>",
        footer_links=["api"],
        run_history=False,  # submitted answers are not kept in the browser's storage
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        show_error=False,
    )
