"""The hot path's statements name their result columns in order (labeling.hot_sql): check every
list against the columns SQLite itself returns, since a wrong order would mislabel values silently."""

from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy.sql.selectable import TextualSelect

from labeling import hot_sql
from labeling.db import open_store


def _selects() -> dict[str, TextualSelect]:
    found = {}
    for name, value in vars(hot_sql).items():
        for key, stmt in (value.items() if isinstance(value, dict) else [(None, value)]):
            if isinstance(stmt, TextualSelect):
                found[name if key is None else f"{name}[{key}]"] = stmt
    return found


def test_every_select_of_the_hot_path_is_listed():
    assert {"VIEWER", "CLAIM[sqlite]", "CLAIM[postgresql]", "TASK_VIEW", "OWN_ASSIGNMENT",
            "PROGRESS[name]", "JUDGMENT_BY_REQUEST"} <= set(_selects())


@pytest.mark.parametrize("name", sorted(_selects()))
def test_result_columns_are_named_in_the_order_sqlite_returns_them(name, tmp_path):
    path = tmp_path / "store.db"
    open_store(f"sqlite:///{path}").dispose()
    stmt = _selects()[name]
    sql = stmt.element.text.replace(" FOR UPDATE OF t SKIP LOCKED", "")  # PostgreSQL's row lock
    sql = re.sub(r"IN :\w+", "IN (0)", sql)  # an expanding list parameter
    params = {p: 1 if p == "n" else None for p in re.findall(r":(\w+)", sql)}  # n: a LIMIT
    with sqlite3.connect(path) as raw:
        returned = [d[0] for d in raw.execute(sql, params).description]
    assert [c.name for c in stmt.selected_columns] == returned
    assert hot_sql.result_names(stmt.element.text) == returned


def test_result_names_skip_commas_inside_parentheses():
    sql = "SELECT a.id, (SELECT min(x, y) FROM z) AS low, count(*) FROM t JOIN (SELECT 1 FROM u) v"
    assert hot_sql.result_names(sql) == ["id", "low", "count(*)"]
