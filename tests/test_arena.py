"""Arena projects: settings, live generation (a tiny local model and a real llama.cpp server), bounds, storage.

The endpoint is llama-cpp-python's OpenAI-compatible server on the embedded SmolLM2 GGUF, started
here on a free port (tests/llama_server.py), not a mock.
"""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select

from _labeling_seed import free_port, seed_users
from labeling import arena
from labeling.answers import submit_judgment
from labeling.arena_backends import BackendError, Backends
from labeling.arena_pool import Battle, GenerationPool, Limits
from labeling.export import export_records
from labeling.models import Candidate, Judgment, Prompt, Task
from llama_server import SERVED, start_llama_server, stop
from prefloop.errors import InputError, NotFoundError

pytestmark = pytest.mark.usefixtures("tiny_cpu")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    base, proc = start_llama_server(free_port(), tmp_path_factory.mktemp("llama") / "server.log")
    yield base
    stop(proc)


def _run(battle, limit_s=120.0):
    deadline = time.monotonic() + limit_s
    seen = []
    while not battle.done:
        assert time.monotonic() < deadline, "the battle did not finish"
        battle.wait(0.05)
        seen.append(battle.texts)
    return seen


def test_model_specs_and_settings(memory_engine):
    spec = arena.parse_model_spec("small=http://127.0.0.1:8080/v1/#smollm2")
    assert (spec.name, spec.target, spec.served) == ("small", "http://127.0.0.1:8080/v1", "smollm2")
    assert spec.is_endpoint
    assert arena.parse_model_spec("http://h:1/v1#m").name == "m"
    assert arena.parse_model_spec("/models/a=b/final").target == "/models/a=b/final"  # a path, not NAME=
    local = arena.parse_model_spec("mine=smollm2-135m-instruct")
    assert (local.name, local.is_endpoint) == ("mine", False)
    with pytest.raises(InputError, match="at least two models"):
        arena.create_arena(memory_engine, "a", ["m1"])
    with pytest.raises(InputError, match="must differ"):
        arena.create_arena(memory_engine, "a", ["x=m1", "x=m2"])
    with pytest.raises(InputError, match="max_new_tokens"):
        arena.create_arena(memory_engine, "a", ["m1", "m2"], max_new_tokens=0)
    with pytest.raises(NotFoundError, match="not an arena"):
        from labeling.db import session_scope
        from labeling.projects import create_project

        with session_scope(memory_engine) as s:
            create_project(s, "plain")
        arena.arena_settings(memory_engine, "plain")
    settings = arena.create_arena(memory_engine, "a", ["m1", "m2", "m3"], reveal_models=False, per_minute=3)
    assert [m["name"] for m in settings.models] == ["m1", "m2", "m3"] and not settings.reveal_models
    assert arena.arena_projects(memory_engine) == ["a"]
    a, b = arena.pick_pair(arena.arena_settings(memory_engine, "a"))
    assert a != b and {a.name, b.name} <= {"m1", "m2", "m3"}
    with pytest.raises(InputError, match="at most 4000"):
        arena.check_prompt(settings, "x" * 4001)


def test_local_models_stream_and_the_vote_is_ordinary_data(memory_engine, tiny_model_dir):
    settings = arena.create_arena(memory_engine, "live", [f"tiny-a={tiny_model_dir}", f"tiny-b={tiny_model_dir}"],
                                  max_new_tokens=24, criteria=["helpfulness"])
    uid = seed_users(memory_engine, ["ann"])["ann"]
    a, b = arena.pick_pair(settings)
    battle = Battle.start(GenerationPool(2), Backends(), settings, "Name a <b>colour</b>.", a, b)
    seen = _run(battle)
    answers = battle.answers()
    assert all(ans.text and 0 < ans.tokens <= 24 and ans.seconds > 0 for ans in answers)
    assert any(0 < len(t[0]) < len(answers[0].text) for t in seen), "text arrived in pieces, not at the end"
    assignment = arena.store_battle(memory_engine, "live", uid, "Name a <b>colour</b>.", *answers, settings)
    submit_judgment(memory_engine, assignment_id=assignment.id, annotator_id=uid,
                           client_request_id="arena-vote-1", choice="a_better", rationale="A is on topic")
    with Session(memory_engine) as s:
        prompt = s.exec(select(Prompt)).one()
        cands = {c.id: c for c in s.exec(select(Candidate))}
        task = s.exec(select(Task)).one()
        judgment = s.exec(select(Judgment)).one()
    assert prompt.messages == [{"role": "user", "content": "Name a <b>colour</b>."}] and prompt.source == "arena"
    shown_a = cands[judgment.display_order[0]]
    assert shown_a.model == a.name and shown_a.text == answers[0].text.strip()
    assert shown_a.gen_config["backend"] == "local" and shown_a.gen_config["max_new_tokens"] == 24
    assert shown_a.gen_config["tokens"] == answers[0].tokens and shown_a.gen_config["seconds"] > 0
    assert sorted(task.candidate_ids) == sorted(cands)
    rows = export_records(memory_engine, "live", "pairwise")
    assert len(rows) == 1 and rows[0]["chosen"][-1]["content"] == answers[0].text.strip()
    assert arena.next_prompt(memory_engine, "live", uid) is None  # the one prompt is judged by ann


def test_endpoint_streams_from_a_real_llama_cpp_server(memory_engine, llama, tiny_model_dir):
    settings = arena.create_arena(memory_engine, "mixed", [f"llama={llama}#{SERVED}", f"tiny={tiny_model_dir}"],
                                  max_new_tokens=16)
    uid = seed_users(memory_engine, ["ann"])["ann"]
    specs = arena.model_specs(settings)
    battle = Battle.start(GenerationPool(2), Backends(), settings, "What is 2 + 2?", specs[0], specs[1])
    seen = _run(battle)
    endpoint, local = battle.answers()
    assert endpoint.text and 0 < endpoint.tokens <= 16 and endpoint.first_token_s is not None
    assert any(0 < len(t[0]) < len(endpoint.text) for t in seen), "the endpoint's answer streamed in pieces"
    assignment = arena.store_battle(memory_engine, "mixed", uid, "What is 2 + 2?", endpoint, local, settings)
    with Session(memory_engine) as s:
        stored = s.get(Candidate, assignment.display_order[0])
    assert (stored.model, stored.gen_config["backend"], stored.gen_config["served"]) == ("llama", "endpoint", SERVED)


def test_two_answers_at_once_from_one_llama_cpp_server(memory_engine, llama):
    """Both models on one server: the second request queues there (--interrupt_requests False) instead of
    ending the first one's answer early and empty."""
    settings = arena.create_arena(memory_engine, "twins", [f"one={llama}#{SERVED}", f"two={llama}#{SERVED}"],
                                  max_new_tokens=12)
    battle = Battle.start(GenerationPool(2), Backends(), settings, "Say something kind.", *arena.model_specs(settings))
    _run(battle)
    assert all(answer.text.strip() and answer.tokens > 0 for answer in battle.answers())


def test_endpoint_failures_are_one_line(memory_engine):
    settings = arena.create_arena(memory_engine, "down", [f"gone=http://127.0.0.1:{free_port()}/v1", "other=x"])
    backend = Backends().get(arena.model_specs(settings)[0], settings)
    with pytest.raises(BackendError, match="endpoint .* failed"):
        backend.stream([{"role": "user", "content": "hi"}], settings, lambda _: None, lambda: False)
    keyed = arena.create_arena(memory_engine, "keyed", ["a=http://127.0.0.1:1/v1", "b=http://127.0.0.1:2/v1"],
                               api_key_env="PREFLOOP_TEST_NO_SUCH_KEY")
    with pytest.raises(BackendError, match=r"\$PREFLOOP_TEST_NO_SUCH_KEY"):
        Backends().get(arena.model_specs(keyed)[0], keyed)


def test_cancel_stops_generation_early(memory_engine, llama, tiny_model_dir):
    settings = arena.create_arena(memory_engine, "long", [f"llama={llama}#{SERVED}", f"tiny={tiny_model_dir}"],
                                  max_new_tokens=2000)
    specs = arena.model_specs(settings)
    battle = Battle.start(GenerationPool(2), Backends(), settings, "Write a very long story.", *specs)
    while not all(battle.texts):
        battle.wait(0.05)
    started = time.monotonic()
    battle.cancel()
    while not battle.done:
        time.sleep(0.02)
    assert time.monotonic() - started < 5
    assert all(job.result[0] < 2000 for job in battle.jobs if job.result)


def test_queue_positions_and_a_reader_that_vanished(memory_engine, tiny_model_dir):
    settings = arena.create_arena(memory_engine, "q", [f"a={tiny_model_dir}", f"b={tiny_model_dir}"],
                                  max_new_tokens=400)
    specs = arena.model_specs(settings)
    pool, backends = GenerationPool(workers=1, idle_cancel_s=1.0), Backends()
    first = Battle.start(pool, backends, settings, "one", *specs)
    second = Battle.start(pool, backends, settings, "two", *specs)
    while first.jobs[0].started is None:  # the one worker takes A of the first
        time.sleep(0.01)
    assert first.positions == (0, 1) and second.positions == (2, 3)  # one worker: A of the first runs
    # Nobody reads `first` or `second` now: the idle cutoff cancels them, and the queue moves on.
    deadline = time.monotonic() + 60
    while not (first.done and second.done):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert all(job.error == "cancelled" or job.result[0] < 400 for job in first.jobs + second.jobs)
    with pytest.raises(InputError, match="could not answer"):
        second.answers()


def test_limits_per_annotator():
    limits = Limits()
    for _ in range(3):
        limits.admit("ann", 3)
    with pytest.raises(InputError, match="at most 3 comparisons a minute"):
        limits.admit("ann", 3)
    limits.admit("bob", 3)  # others are not held back

    class Fake:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    old, new = Fake(), Fake()
    limits.replace("ann", old)
    limits.replace("ann", new)
    assert old.cancelled and not new.cancelled


def test_cli_create_show_and_bad_input(tmp_path, capsys, tiny_model_dir):
    from labeling.cli import main
    from labeling.db import open_store

    db = str(tmp_path / "store.db")
    open_store(db).dispose()
    assert main(["arena", "create", "--store", db, "--project", "c", "--models", f"a={tiny_model_dir}",
                 "b=http://127.0.0.1:9/v1#served-b", "--reveal-models", "false", "--per-minute", "2"]) == 0
    assert main(["arena", "show", "--store", db, "--project", "c"]) == 0
    out = capsys.readouterr().out
    assert "(model served-b)" in out and "2 comparisons a minute" in out and "never shown" in out
    for argv, message in [(["--models", f"a={tiny_model_dir}"], "at least two models"),
                          (["--models", "a=/no/such/model", "b=http://h/v1"], "no such directory"),
                          (["--models", "a=http://h/v1", "b=http://h/v1", "--max-new-tokens", "0"], "max_new_tokens")]:
        assert main(["arena", "create", "--store", db, "--project", "c", *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    settings = arena.arena_settings(open_store(db), "c")
    assert [m["name"] for m in settings.models] == ["a", "b"]  # the refused creates changed nothing
