"""The labeling app in a real headless Chromium against a real `labeling serve` on localhost.

One server and one browser for the module. Set PREFLOOP_SCREENSHOTS=docs to refresh
docs/annotator.png and docs/dashboard.png from this run.
"""

from __future__ import annotations

import os
import random
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from _labeling_seed import PAYLOADS, api_client, seed_project, seed_users, start_server
from browser_helpers import TIMEOUT_MS, browser, login  # noqa: F401 - browser: the module-scoped Chromium fixture
from labeling import answers, assign
from labeling.app.admin import BOOTSTRAP_ROUNDS
from labeling.db import open_store, session_scope
from labeling.leaderboard import leaderboard
from labeling.models import Annotator, Assignment, Judgment, Project, Task, utcnow

pytestmark = pytest.mark.browser


CODE_ANSWER = "Sure:\n\n```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\n\nCall `add(2, 3)`."
PLAIN_ANSWER = "Use the built-in: `sum([a, b])` returns the total.\n\n1. works for floats\n2. works for ints"
CONVERSATION = [{"role": "system", "content": "You are a concise Python tutor."},
                {"role": "user", "content": "How do I add two numbers in Python?"},
                {"role": "assistant", "content": "Do you want a function or an expression?"},
                {"role": "user", "content": "A **function**, please."}]


def _seed_history(engine, names, project="history"):
    """Simulated annotators taking turns, mostly agreeing, with judgments spread over the last hours."""
    rng = random.Random(0)
    active = dict(names)
    while active:
        for name, uid in list(active.items()):
            lease = assign.next_assignment(engine, project, uid, rng=rng)
            if lease is None:
                del active[name]
                continue
            with Session(engine) as s:
                task = s.get(Task, lease.task_id)
                # Gold tasks: candidate 0 is right; otherwise a fixed "true" winner per task.
                best = task.candidate_ids[0] if task.gold else task.candidate_ids[task.id % 2]
            wins = "a_better" if lease.display_order[0] == best else "b_better"
            choice = wins if rng.random() < 0.8 else rng.choice(["tie", "a_much_better", "b_better", "both_bad"])
            answers.submit_judgment(engine, assignment_id=lease.id, annotator_id=uid,
                                   client_request_id=f"{name}-{lease.id}", choice=choice,
                                   ms_spent=rng.randint(4_000, 40_000))
    with session_scope(engine) as s:
        for j in s.exec(select(Judgment)).all():
            s.execute(update(Judgment).where(Judgment.id == j.id)
                      .values(created_at=utcnow() - timedelta(hours=j.id % 6, minutes=j.id % 50)))


def _seed_lineage(engine, project="history"):
    """One round of the loop's records, a run path carrying a script payload (names are untrusted)."""
    from labeling.lineage import record

    reference = record(engine, project, 0, "policy", "secret-model-0", details={"summary": "the reference"})
    candidates = record(engine, project, 1, "candidates", "round 1 candidates", [reference],
                        {"summary": "48 candidates from 2 model(s), 24 tasks"})
    export = record(engine, project, 1, "export", "runs/loop/round-1/pairs.train.jsonl", [candidates])
    rm = record(engine, project, 1, "reward_model", "runs/loop/round-1/reward_model", [export],
                {"summary": "held-out accuracy 0.812"})
    policy = record(engine, project, 1, "policy", f"runs/loop/round-1/{PAYLOADS[1]}/final", [reference, rm, export])
    record(engine, project, 1, "evaluation", "runs/loop/round-1/eval/eval.json", [policy],
           {"summary": "gold win rate 0.713 [0.620, 0.790]"})


# Types into each box ({selector: text}) the moment it is shown, as keystrokes do (value, then an input event);
# window.__typed then resolves to what each box holds a few frames later.
TYPE_WHEN_SHOWN = """typed => { window.__typed = (async () => {
  const shown = async sel => {
    for (const t0 = performance.now(); performance.now() - t0 < 20000; await new Promise(r => setTimeout(r, 0))) {
      const box = document.querySelector(sel);
      if (box && box.checkVisibility()) return box;
    }
    throw new Error(sel + ' was not shown');
  };
  await Promise.all(Object.entries(typed).map(async ([sel, text]) => {
    const box = await shown(sel);
    box.value = text;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }));
  for (let i = 0; i < 10; i++) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => setTimeout(r, 300));
  return Object.fromEntries(Object.keys(typed).map(sel => [sel, document.querySelector(sel).value]));
})(); }"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    engine = open_store(f"sqlite:///{tmp_path_factory.mktemp('browser') / 'store.db'}")
    seed_project(engine, "demo", n_tasks=6, overlap=2, criteria=["helpfulness", "honesty"],
                 guidelines="Prefer **correct** and *concise* answers.", conversation=CONVERSATION,
                 responses=[CODE_ANSWER, PLAIN_ANSWER])
    seed_project(engine, "rank", n_tasks=2, mode="ranking", k=3)
    payload_text = "\n\n".join(PAYLOADS)
    seed_project(engine, "xss", n_tasks=2, guidelines=payload_text,
                 conversation=[{"role": "user", "content": payload_text},
                               {"role": "assistant", "content": payload_text},
                               {"role": "user<script>", "content": "and again: " + PAYLOADS[1]}],
                 responses=[payload_text, "plain <b>bold?</b> " + PAYLOADS[2]])
    seed_project(engine, "history", n_tasks=24, n_gold=6, overlap=2, gold_rate=0.2)
    seed_users(engine, ["ann", "eve"])
    _seed_history(engine, seed_users(engine, ["sim-alice", "sim-bob", "sim-carol"]))
    _seed_lineage(engine)
    seed_users(engine, ["root"], role="admin")
    url, server = start_server(engine, project="demo")
    yield url, engine
    server.close()
    engine.dispose()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def _pick_project(page, name):
    page.locator("#pl-project input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function("p => document.querySelector('#pl-progress').innerText.includes(p)", arg=name)


def _wait_progress(page, done_today):
    page.wait_for_function("n => document.querySelector('#pl-progress').innerText.startsWith(n + ' done today')",
                           arg=str(done_today))


def _screenshot(page, name):
    target = os.environ.get("PREFLOOP_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / name), full_page=True)


def _judgments(engine, name):
    with Session(engine) as s:
        return s.exec(select(Judgment).join(Assignment, Assignment.id == Judgment.assignment_id)
                      .where(Judgment.annotator_id == _uid(s, name)).order_by(Judgment.id)).all()


def _uid(session, name):
    return session.exec(select(Annotator.id).where(Annotator.name == name)).one()


def test_nothing_visible_without_login(app, page):
    url, _ = app
    page.goto(url)
    page.wait_for_selector("input[type=password]")
    assert page.locator(".pl-card").count() == 0 and "Question" not in page.content()
    assert page.request.get(url + "config").status == 401
    assert page.request.get(url + "gradio_api/info").status == 401
    page.locator("input[type=text]").fill("ann")
    page.locator("input[type=password]").fill("wrong-password")
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("text=Incorrect Credentials", timeout=TIMEOUT_MS)
    assert page.locator(".pl-card").count() == 0


def test_annotator_keyboard_flow(app, page):
    url, engine = app
    login(page, url, "ann")
    page.wait_for_selector("#pl-responses .pl-card")
    _wait_progress(page, 0)
    assert "How do I add two numbers" in page.locator("#pl-conversation").inner_text()
    assert page.locator("#pl-responses pre.code span.k").count() >= 1  # highlighted code
    assert "1 A is much better" in page.locator("#pl-keys").inner_text()  # shortcuts shown
    page.wait_for_timeout(500)
    assert page.get_by_test_id("toast-body").count() == 0  # the page loaded without an error
    _screenshot(page, "annotator.png")

    page.keyboard.press("4")
    assert page.locator("#pl-choice input[value=b_better]").is_checked()
    page.keyboard.press("Enter")
    _wait_progress(page, 1)
    assert page.locator("#pl-status").inner_text().strip() == "Saved."
    assert not page.locator("#pl-choice input[value=b_better]").is_checked()  # a fresh task, no reload
    first = _judgments(engine, "ann")
    assert [j.choice for j in first] == ["b_better"] and first[0].ms_spent > 0

    # A rating typed into the grid stays in the grid (digits there are not shortcuts), then a
    # rationale, submitted with Ctrl+Enter from inside the text box.
    page.locator("#pl-ratings [data-testid=cell-1-2]").dblclick()  # honesty of response B
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("3")
    # The box is built with the page, closed (a box Gradio built on first opening got its stored "" written
    # back a frame or two later, wiping what was typed that instant); text typed at once is kept.
    box = page.locator("#pl-rationale textarea")
    assert box.count() == 1 and not box.is_visible()
    page.get_by_text("Rationale and a better response").click()
    box.fill("Equally good.")
    page.wait_for_timeout(300)
    assert box.input_value() == "Equally good."
    box.press("Control+Enter")
    _wait_progress(page, 2)
    second = _judgments(engine, "ann")[-1]
    assert (second.choice, second.rationale) == ("tie", "Equally good.")
    assert second.ratings == {"honesty": {str(second.display_order[1]): 5}}

    # Double-clicking submit records one judgment.
    page.keyboard.press("1")
    page.locator("#pl-submit").dblclick()
    _wait_progress(page, 3)
    page.wait_for_timeout(500)
    assert [j.choice for j in _judgments(engine, "ann")] == ["b_better", "tie", "a_much_better"]

    # S skips with the selected reason; the next task appears.
    page.keyboard.press("s")
    page.wait_for_selector("#pl-status >> text=Skipped.")
    with Session(engine) as s:
        skipped = s.exec(select(Assignment).where(Assignment.status == "skipped",
                                                  Assignment.annotator_id == _uid(s, "ann"))).one()
    assert skipped.skip_reason == "Outside my expertise"
    assert page.locator("#pl-responses .pl-card").count() == 2


def test_ranking_with_letter_keys(app, page):
    url, engine = app
    login(page, url, "ann")
    _pick_project(page, "rank")
    page.wait_for_selector("#pl-responses .pl-k3")
    for key in "cax":  # x is not a shown label: ignored
        page.keyboard.press(key)
    page.keyboard.press("Backspace")
    page.keyboard.press("a")
    page.keyboard.press("b")
    assert page.locator("#pl-ranking input, #pl-ranking textarea").input_value() == "CAB"
    page.keyboard.press("Enter")
    page.wait_for_selector("#pl-status >> text=Saved.")
    judgment = [j for j in _judgments(engine, "ann") if j.ranking][0]
    order = judgment.display_order  # shown A, B, C
    assert judgment.ranking == [order[2], order[0], order[1]]


def test_no_model_names_or_other_annotators_in_the_page(app, page):
    url, _ = app
    login(page, url, "eve")
    page.wait_for_selector("#pl-responses .pl-card")
    html = page.content() + str(page.evaluate("JSON.stringify(window.gradio_config)"))
    assert "secret-model" not in html
    words = set(re.findall(r"[\w-]+", page.locator("body").inner_text()))
    assert not words & {"sim-alice", "sim-bob", "sim-carol", "root", "ann"}  # other accounts' names


def test_script_payloads_never_run(app, page):
    url, _ = app
    login(page, url, "eve")
    _pick_project(page, "xss")
    page.wait_for_selector("#pl-responses .pl-card")
    page.locator("#pl-guidelines").get_by_text("Guidelines").click()  # render the guidelines too
    page.wait_for_timeout(1000)
    for link in page.locator("#pl-conversation a, #pl-responses a, #pl-guidelines a").all():
        link.click(modifiers=["Control"])  # would run a javascript: URL; opens http ones in a tab
    page.locator("#pl-responses .pl-card").last.hover()  # would fire a live onmouseover
    page.wait_for_timeout(500)

    assert page.evaluate("window.__pwned") is None and page.evaluate("parent.__pwned") is None
    assert page.title() == "prefloop labeling" and page.dialogs == []
    shown = page.locator("#pl-responses").inner_text() + page.locator("#pl-conversation").inner_text()
    assert "<script>window.__pwned = 'script'" in shown and "<img src=x onerror=" in shown  # visible as text
    assert "[click me](javascript:window.__pwned='link')" in shown
    live = page.evaluate("""() => {
        const roots = ['#pl-conversation', '#pl-responses', '#pl-guidelines'].map(s => document.querySelector(s));
        const all = roots.flatMap(r => [...r.querySelectorAll('*')]);
        return {
          scripts: all.filter(e => ['SCRIPT', 'IFRAME', 'SVG', 'IMG', 'STYLE', 'DETAILS'].includes(e.tagName.toUpperCase())).length,
          handlers: all.filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
          badLinks: all.filter(e => e.tagName === 'A' && !/^https?:|^mailto:/.test(e.getAttribute('href') || 'https:')).length,
        };
    }""")
    assert live == {"scripts": 0, "handlers": 0, "badLinks": 0}


def test_admin_sees_dashboard_creates_closes_and_exports(app, page, tmp_path):
    url, engine = app
    login(page, url, "root")
    page.get_by_role("tab", name="Dashboard").click()
    page.locator("#pl-dash-project input").click()
    page.get_by_role("option", name="history", exact=True).click()
    # The summary of the project shown before the choice stays on screen while the new one loads
    # ("processing"), so wait for the chosen project's own task count rather than any table.
    page.wait_for_selector('#pl-dash-summary:has-text("/ 30")')
    summary = page.locator("#pl-dash-summary").inner_text()
    with Session(engine) as s:
        judged = len(s.exec(select(Judgment).join(Task).join(Project).where(Project.name == "history")).all())
    assert str(judged) in summary.split() and "Krippendorff" in summary  # judgments of its 30 tasks
    assert "sim-alice" in page.locator("#pl-dash-annotators").inner_text()
    assert page.locator("canvas, svg.marks").count() >= 4  # the four charts
    # the leaderboard (strengths with bootstrap intervals and ranks, a table and a chart) and the lineage:
    # one event fills all three, so once the lineage is history's own (other projects have the same model
    # names, and no lineage), so is the leaderboard
    page.wait_for_selector('#pl-dash-lineage:has-text("gold win rate 0.713")')
    board = page.locator("#pl-dash-leaderboard").inner_text()
    for row in leaderboard(engine, "history", rounds=BOOTSTRAP_ROUNDS, seed=0):  # what `labeling leaderboard` says
        shown = f"{row['elo']:.0f}\n{row['elo_lo']:.0f} .. {row['elo_hi']:.0f}\n{row['win_rate']:.3f}\n{row['games']}"
        assert f"{row['rank_lo']}-{row['rank_hi']}\n{row['model']}" in board and shown in board
    assert page.locator("#pl-dash-board-plot img").count() == 1  # the matplotlib figure, as an image
    history = page.locator("#pl-dash-lineage").inner_text()
    for kind in ("policy", "candidates", "export", "reward_model", "evaluation"):
        assert kind in history
    assert "reward_model #4, export #3" in history and PAYLOADS[1] in history  # the payload is shown as text
    assert page.locator("#pl-dash-lineage img, #pl-dash-leaderboard img").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.wait_for_timeout(1500)  # let the charts finish drawing
    _screenshot(page, "dashboard.png")

    page.locator("#pl-dash-export").click()
    link = page.locator("#pl-dash-file a").first
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "export.jsonl"
    download.value.save_as(saved)
    rows = saved.read_text().splitlines()
    assert rows and '"chosen"' in rows[0] and '"prompt"' in rows[0]

    # The form typed into the instant the accordion shows each box, no wait for Gradio to settle. When Gradio
    # built the boxes on that first opening it wrote their defaults back a frame or two later: the numbers
    # went back to 1 and 1800 (3 of 3 runs; the name kept its text). Now all are kept, and used.
    typed = {"#pl-new-name textarea": "fresh", "#pl-new-overlap input": "3", "#pl-new-lease input": "600"}
    page.evaluate(TYPE_WHEN_SHOWN, typed)
    page.get_by_text("New project").click()
    assert page.evaluate("window.__typed") == typed
    page.locator("#pl-new-create").click()
    page.wait_for_selector("#pl-dash-projects >> text=fresh")
    with Session(engine) as s:
        fresh = s.exec(select(Project).where(Project.name == "fresh")).one()
    assert (fresh.overlap, fresh.lease_seconds) == (3, 600)
    page.locator("#pl-dash-target input").click()
    page.get_by_role("option", name="fresh", exact=True).click()
    page.locator("#pl-dash-close").click()
    page.wait_for_function("() => document.querySelector('#pl-dash-projects').innerText.includes('false')")
    with Session(engine) as s:
        assert not s.exec(select(Project).where(Project.name == "fresh")).one().is_open


def test_annotator_cannot_reach_admin_views_or_export(app, page):
    url, _ = app
    login(page, url, "ann")
    page.wait_for_selector("#pl-responses .pl-card")
    assert page.get_by_role("tab", name="Dashboard").count() == 0
    assert not page.locator("#pl-dash-summary").is_visible()
    assert "sim-alice" not in page.content()
    client = api_client(url, "ann")
    for endpoint, args in [("/stats", ["history"]), ("/export", ["history", "pairwise"]), ("/list_projects", []),
                           ("/set_project_open", ["history", False]), ("/create_project", ["mine"])]:
        with pytest.raises(Exception, match="admins only"):
            client.predict(*args, api_name=endpoint)
