"""Config fields that several commands share, declared once (one name, one help, one default each).

`store_field()`: the preference store a command opens (`--store`; `--db` is its old name, kept for one
release by prefloop.config's aliases).
"""

from __future__ import annotations

from prefloop.config import config_field

STORE_HELP = "the preference store: SQLAlchemy URL or SQLite path (unset: $PREFLOOP_DB, else ./prefloop.db)"


def store_field(help_text: str = STORE_HELP):
    """The store a labeling-side command opens; `--db` / `db:` still mean it for one release."""
    return config_field(None, help_text, aliases=("db",))
