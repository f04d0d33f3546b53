"""`labeling serve`: the labeling web app over a preference store.

    labeling serve --db postgresql+psycopg://user:pw@dbhost/prefloop --host 0.0.0.0 --port 7860

Several processes may serve one PostgreSQL database (one per port, behind a load
balancer with sticky sessions): assignment and judgments are arbitrated by the
database's unique constraints and row locks, not by process memory.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from prefloop.config import parse_config

SHUTDOWN_GRACE_S = 2.0  # how long a stopping server lets running requests finish


@dataclass
class ServeConfig:
    """Serve the labeling app (annotator page, admin dashboard, API) over a preference store."""

    db: str | None = field(default=None, metadata={"help": "store URL or SQLite path; unset: $PREFLOOP_DB, else ./prefloop.db"})
    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0: every interface)"})
    port: int = field(default=7860, metadata={"help": "TCP port"})
    project: str | None = field(default=None, metadata={"help": "project preselected for annotators"})
    concurrency: int = field(default=16, metadata={
        "help": "requests handled at once per page event, and JSON API calls at once in worker threads (database "
                "locks order them; on SQLite the annotator's short JSON API calls run on the event loop, one at a time)"})
    max_threads: int = field(default=40, metadata={"help": "worker threads of the web server"})
    root_path: str = field(default="", metadata={"help": "URL prefix when served behind a reverse proxy, e.g. /labeling"})
    export_dir: str | None = field(default=None, metadata={"help": "directory for dashboard exports; unset: a temporary directory"})

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: expected 0..65535")
        if self.concurrency < 1 or self.max_threads < 1:
            raise ValueError("concurrency and max_threads: at least 1")


def serve(engine, host: str = "127.0.0.1", port: int = 7860, project: str | None = None, *, block: bool = True,
          concurrency: int = 16, max_threads: int = 40, root_path: str = "", export_dir: str | Path | None = None,
          quiet: bool = False, login_policy=None):
    """Start the app on host:port over `engine`; returns the running Blocks (`.close()` stops it).

    block=False returns at once with the server running in a background thread (tests, demos).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a labeling server
    from labeling.app.build import build_app, launch_kwargs
    from labeling.app.context import AppContext

    ctx = AppContext(engine=engine, default_project=project, export_dir=Path(export_dir) if export_dir else None,
                     **({"login_policy": login_policy} if login_policy else {}))
    demo = build_app(ctx, concurrency=concurrency)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, max_threads=max_threads,
                root_path=root_path, quiet=quiet, share=False, **launch_kwargs(ctx, concurrency))
    # Open event streams (a browser tab, an API client) would otherwise hold a shutdown forever.
    demo.server.config.timeout_graceful_shutdown = SHUTDOWN_GRACE_S
    if block:
        _wait_for_stop_signal()
        demo.close(verbose=not quiet)
    return demo


def _wait_for_stop_signal() -> None:
    """Block until SIGTERM or SIGINT (Ctrl+C), then return so the caller can shut down cleanly.

    Without this, SIGTERM killed the process wherever it stood: requests in flight were cut off
    and nothing was closed. Now the server stops accepting, lets running requests finish for up
    to SHUTDOWN_GRACE_S, ends the event streams, and the command exits 0.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(0.5):  # a timed wait: signal handlers run in between
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    from labeling.db import get_project, open_store, session_scope

    cfg = parse_config(ServeConfig, argv, prog="labeling serve")
    engine = open_store(cfg.db, create=False)
    if cfg.project:  # preselected for every annotator: a typo would greet them with an error
        with session_scope(engine, immediate=False) as session:
            get_project(session, cfg.project)
    _check_port_free(cfg.host, cfg.port)
    _warn_if_no_admin(engine)
    serve(engine, cfg.host, cfg.port, cfg.project, concurrency=cfg.concurrency, max_threads=cfg.max_threads,
          root_path=cfg.root_path, export_dir=cfg.export_dir)
    engine.dispose()
    return 0


def _check_port_free(host: str, port: int) -> None:
    """One line now, rather than the web server's traceback after the app is built."""
    import socket

    from prefloop.errors import InputError

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as err:
            raise InputError(f"port {port} on {host}: cannot listen there ({err.strerror}; "
                             f"in use by another program?); choose another --port") from None


def _warn_if_no_admin(engine) -> None:
    from sqlmodel import Session, select

    from labeling.models import Annotator

    with Session(engine) as session:
        if session.exec(select(Annotator).where(Annotator.role == "admin")).first() is None:
            print("labeling serve: no admin account yet; the dashboard needs one (see `labeling users --help`)",
                  file=sys.stderr)


if __name__ == "__main__":
    from prefloop.cli import run_main

    sys.exit(run_main(main, sys.argv[1:], "labeling serve"))
