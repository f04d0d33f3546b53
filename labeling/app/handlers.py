"""Glue shared by the page modules: who is asking, and user errors as Gradio messages."""

from __future__ import annotations

import functools
import html
import inspect

import gradio as gr

from labeling.app.auth import Viewer, viewer_for
from labeling.app.context import AppContext
from prefloop.errors import UserError


def viewer(ctx: AppContext, request: gr.Request) -> Viewer:
    return viewer_for(ctx.engine, getattr(request, "username", None))


def user_errors(fn, *, for_browser: bool = True):
    """Show bad input, missing rights or unknown names as a one-line message, not a stack trace.

    The browser renders an error message as HTML, and ours may quote user input, so it is
    escaped there; API clients get the plain text.
    """
    def shown(err: Exception) -> gr.Error:
        return gr.Error(html.escape(str(err)) if for_browser else str(err), print_exception=False)

    if inspect.isgeneratorfunction(fn):  # a streaming handler fails while it is iterated, not when called
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as err:
                raise shown(err) from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            raise shown(err) from None

    return wrapper
