"""Rendering untrusted text: what survives sanitising is an allow-list of inert markup."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from labeling.app.render import ALLOWED_TAGS, conversation_html, markdown_html, responses_html, sanitize
from _labeling_seed import PAYLOADS


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(fragment: str) -> list[tuple[str, dict]]:
    parser = _Collect()
    parser.feed(fragment)
    return parser.tags


def _assert_inert(fragment: str) -> None:
    for tag, attrs in _tags(fragment):
        assert tag in ALLOWED_TAGS | {"div"}, tag
        assert not [a for a in attrs if a.startswith("on") or a in ("style", "src", "srcdoc")], (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith(("http://", "https://", "mailto:")), href


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_render_as_inert_text(payload):
    out = markdown_html(payload)
    _assert_inert(out)
    assert "javascript:" not in "".join(str(a) for _, a in _tags(out)).lower()


def test_raw_html_is_shown_as_text_not_markup():
    out = markdown_html('<img src=x onerror="alert(1)"> and <b>bold</b>')
    assert "&lt;img src=x onerror=" in out and "&lt;b&gt;bold&lt;/b&gt;" in out and "<img" not in out


def test_markdown_and_highlighted_code_survive():
    out = markdown_html("**bold** [docs](https://example.com)\n\n```python\ndef f():\n    return 1\n```\n\n| a |\n|---|\n| 1 |")
    assert "<strong>bold</strong>" in out and "<table>" in out
    assert '<a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">docs</a>' in out
    assert '<pre class="code"><code><span class="k">def</span>' in out


def test_sanitize_drops_unknown_classes_relative_links_and_tags():
    out = sanitize('<span class="k pl-evil">x</span><a href="logout">out</a><div onclick="x">d</div><svg></svg>')
    assert out == '<span class="k">x</span><a target="_blank" rel="noopener noreferrer nofollow">out</a>d'


def test_wrappers_escape_roles_and_label_responses_without_models():
    page = conversation_html([{"role": '<img src=x onerror="alert(1)">', "content": "hi"},
                              {"role": "assistant", "content": "<script>x</script>"}])
    _assert_inert(page)
    assert "&lt;img" in page and "&lt;script&gt;x&lt;/script&gt;" in page
    cards = responses_html(["first", "second", "third"])
    assert cards.count("Response ") == 3 and "Response C" in cards and 'class="pl-cards pl-k3"' in cards
