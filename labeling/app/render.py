"""Untrusted text (prompts, model responses, guidelines) to safe HTML.

Two independent layers, so a bug in one is not an XSS:

1. markdown-it with `html=False`: raw HTML in the text is escaped and shown as text,
   links with javascript:/vbscript:/data:/file: targets are not made into links, images
   are not rendered (no tracking pixels, no `onerror`). Code fences are highlighted by
   Pygments into `<span class="...">` tokens.
2. nh3 (ammonia) on the result: an allow-list of tags, attributes, classes and URL
   schemes; anything else (script, style, event handlers, iframes, svg) is dropped.

The wrappers around the fragments (role badges, A/B cards) are built here with
`html.escape` on every interpolated value.
"""

from __future__ import annotations

import html
from functools import lru_cache

ALLOWED_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
                "pre", "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span"}
ALLOWED_SCHEMES = {"http", "https", "mailto"}
LABELS = "ABCDEFGHI"  # shown names of candidates, in display order (k <= 9)
ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


@lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    return md


@lru_cache(maxsize=1)
def _token_classes() -> set[str]:
    from pygments.token import STANDARD_TYPES

    return {c for c in STANDARD_TYPES.values() if c}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name, guess_lexer
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang) if lang else guess_lexer(code)
    except ClassNotFound:
        return ""  # markdown-it falls back to escaped plain text
    body = highlight(code, lexer, HtmlFormatter(nowrap=True))
    return f'<pre class="code"><code>{body}</code></pre>'


def sanitize(fragment: str) -> str:
    """Keep only the allow-listed markup of an HTML fragment."""
    import nh3

    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes={"a": {"href", "title"}},  # classes: only via allowed_classes
        allowed_classes={"span": _token_classes(), "pre": {"code"}},
        url_schemes=ALLOWED_SCHEMES,
        url_relative="deny",  # a relative link could point into the app itself (e.g. logout)
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )


def markdown_html(text: str) -> str:
    """Markdown with highlighted code, sanitised; the one entry point for untrusted text."""
    return sanitize(_markdown().render(text or ""))


def conversation_html(messages: list[dict]) -> str:
    turns = []
    for message in messages:
        role = str(message.get("role", "user"))
        name = ROLE_NAMES.get(role, role)
        turns.append(f'<div class="pl-turn pl-{html.escape(role if role in ROLE_NAMES else "other")}">'
                     f'<div class="pl-role">{html.escape(name)}</div>'
                     f'<div class="pl-text">{markdown_html(str(message.get("content", "")))}</div></div>')
    return f'<div class="pl-conversation">{"".join(turns)}</div>'


def responses_html(texts: list[str]) -> str:
    """Candidates side by side, named A, B, ... in the order shown; never the model behind them."""
    cards = "".join(
        f'<div class="pl-card" data-label="{LABELS[i]}"><div class="pl-card-head">Response {LABELS[i]}</div>'
        f'<div class="pl-text">{markdown_html(text)}</div></div>'
        for i, text in enumerate(texts))
    return f'<div class="pl-cards pl-k{len(texts)}">{cards}</div>'


def text_html(text: str) -> str:
    """Plain text (a status line, an error) as escaped HTML."""
    return html.escape(text or "")


@lru_cache(maxsize=1)
def pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(style="friendly").get_style_defs(".pl-text pre.code")
