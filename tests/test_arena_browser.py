"""The arena in a real headless Chromium against a real `labeling serve`: type, watch both answers stream, vote.

Models: the tiny local model and llama-cpp-python's server on the embedded GGUF (a real
OpenAI-compatible endpoint); for script payloads and a slow model, tests/chat_stub.py.
"""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select

from _labeling_seed import PAYLOADS, free_port, seed_users, start_server
from chat_stub import ChatStub
from labeling.arena import create_arena
from labeling.db import open_store
from labeling.models import Candidate, Judgment
from llama_server import SERVED, start_llama_server, stop
from browser_helpers import TIMEOUT_MS, browser, login  # noqa: F401 - browser: the module-scoped Chromium fixture

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("tiny_cpu")]

# Polls the A/B cards every animation frame until the vote controls show; returns the texts seen.
WATCH_STREAM = """() => new Promise((resolve, reject) => {
  const seen = [], t0 = performance.now();
  const tick = () => {
    const cards = [...document.querySelectorAll('#pl-arena-responses .pl-card .pl-text')].map(c => c.innerText);
    if (cards.length === 2 && (seen.length === 0 || seen[seen.length - 1].join('|') !== cards.join('|'))) seen.push(cards);
    const vote = document.querySelector('#pl-arena-vote');
    if (vote && vote.checkVisibility()) return resolve(seen);
    if (performance.now() - t0 > 60000) return reject(new Error('no vote button after 60 s'));
    requestAnimationFrame(tick);
  };
  tick();
})"""


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("arena-browser")
    llama_url, llama = start_llama_server(free_port(), tmp / "llama.log")
    stub = ChatStub()
    engine = open_store(f"sqlite:///{tmp / 'store.db'}")
    create_arena(engine, "live", [f"hidden-tiny={tiny_model_dir}", f"hidden-llama={llama_url}#{SERVED}"],
                 max_new_tokens=40, criteria=["helpfulness"])
    create_arena(engine, "xss", [f"evil-one={stub.url}#evil", f"evil-two={stub.url}#evil"], reveal_models=False,
                 guidelines="Judge **safety**.\n\n" + PAYLOADS[0] + "\n\n" + PAYLOADS[3])
    create_arena(engine, "slow", [f"slow-a={stub.url}#slow", f"slow-b={stub.url}#slow"], max_new_tokens=300)
    seed_users(engine, ["ann", "eve", "bob"])
    url, server = start_server(engine, arena_workers=2)
    yield url, engine, stub
    server.close()
    engine.dispose()
    stub.close()
    stop(llama)


def _page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return page


def _open_arena(page, url, name, project):
    login(page, url, name)
    page.get_by_role("tab", name="Arena").click()
    page.locator("#pl-arena-project input").click()
    page.get_by_role("option", name=project, exact=True).click()


def _send(page, prompt):
    page.locator("#pl-arena-prompt textarea").fill(prompt)
    page.locator("#pl-arena-send").click()


def test_type_watch_both_stream_and_vote(app, browser):
    url, engine, _ = app
    page = _page(browser)
    _open_arena(page, url, "ann", "live")
    _send(page, "Name three colours.")
    seen = page.evaluate(WATCH_STREAM)
    final = seen[-1]
    assert all(final), "both answers arrived"
    assert any(0 < len(a) < len(final[0]) or 0 < len(b) < len(final[1]) for a, b in seen[:-1]), \
        f"the answers streamed in pieces ({len(seen)} states seen)"
    assert "hidden-tiny" not in page.content() and "hidden-llama" not in page.content()  # anonymous until the vote
    page.locator("#pl-arena-choice").get_by_text("A is better", exact=False).first.click()
    page.locator("#pl-arena-rationale textarea").fill("A lists colours")
    page.locator("#pl-arena-vote").click()
    page.wait_for_selector("#pl-arena-reveal >> text=A was")
    reveal = page.locator("#pl-arena-reveal").inner_text()
    with Session(engine) as s:
        judgment = s.exec(select(Judgment)).one()
        shown_a = s.get(Candidate, judgment.display_order[0])
    assert judgment.choice == "a_better" and judgment.rationale == "A lists colours"
    assert f"A was {shown_a.model}" in reveal and shown_a.gen_config["arena"]
    assert shown_a.text.strip()[:20] in final[0].strip()
    page.context.close()


def test_script_payloads_in_prompt_and_answers_stay_text(app, browser):
    url, engine, _ = app
    page = _page(browser)
    _open_arena(page, url, "eve", "xss")
    _send(page, "   ")  # refused in one line by the streaming handler, before any model runs
    page.get_by_test_id("toast-body").filter(has_text="type a prompt first").wait_for()
    _send(page, "\n\n".join(PAYLOADS))
    page.evaluate(WATCH_STREAM)
    page.locator("#pl-arena-guidelines").get_by_text("Guidelines").click()
    page.locator("#pl-arena-guidelines").get_by_text("<script>window.__pwned").wait_for()  # shown as text
    assert page.locator("#pl-arena-guidelines strong").inner_text() == "safety"  # markdown is rendered
    page.locator("#pl-arena-responses .pl-card").last.hover()  # would fire a live onmouseover
    shown = page.locator("#pl-arena-responses").inner_text()
    assert "<script>window.__pwned = 'script'" in shown and "<img src=x onerror=" in shown
    page.locator("#pl-arena-choice").get_by_text("Tie", exact=False).first.click()
    page.locator("#pl-arena-vote").click()
    page.wait_for_selector("#pl-arena-reveal >> text=Thanks!")
    page.wait_for_timeout(500)
    assert page.evaluate("window.__pwned") is None and page.title() == "prefloop labeling" and page.dialogs == []
    live = page.evaluate("""() => [...document.querySelectorAll('#pl-arena-responses *, #pl-arena-guidelines *')]
        .filter(e =>
        ['SCRIPT', 'IFRAME', 'SVG', 'IMG', 'STYLE', 'DETAILS'].includes(e.tagName.toUpperCase())
        || [...e.attributes].some(a => a.name.startsWith('on'))
        || (e.tagName === 'A' && !/^https?:|^mailto:/.test(e.getAttribute('href') || 'https:'))).length""")
    assert live == 0
    assert "evil-one" not in page.content() and "evil-two" not in page.content()  # this project never reveals
    with Session(engine) as s:
        judgment = s.exec(select(Judgment).where(Judgment.choice == "tie")).one()
        assert s.get(Candidate, judgment.display_order[0]).text.startswith(PAYLOADS[0])
    page.context.close()


def test_queue_position_shown_and_a_closed_tab_cancels(app, browser):
    url, _, stub = app
    first, second = _page(browser), _page(browser)
    _open_arena(first, url, "ann", "slow")
    _open_arena(second, url, "bob", "slow")
    start = len(stub.requests)
    _send(first, "a long one, please")
    first.wait_for_function("() => document.querySelector('#pl-arena-responses').innerText.includes('word')")
    _send(second, "me too")  # two workers, both busy with the first tab's answers
    second.wait_for_selector("#pl-arena-status >> text=in the queue")
    assert "A: #1" in second.locator("#pl-arena-status").inner_text()
    first.context.close()  # the tab goes: its two answers stop, the second tab's start
    second.wait_for_function("() => document.querySelector('#pl-arena-responses').innerText.includes('word')")
    deadline = time.monotonic() + 20
    while not all(r["hung_up"] for r in stub.requests[start:start + 2]):
        assert time.monotonic() < deadline, stub.requests[start:]
        time.sleep(0.2)
    assert all(r["sent"] < 150 for r in stub.requests[start:start + 2])  # of 188 chunks
    second.context.close()
