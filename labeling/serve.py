"""`labeling serve`: the labeling web app over a preference store.

    labeling serve --store postgresql+psycopg://user:pw@dbhost/prefloop --host 0.0.0.0 --port 7860

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
from prefloop.fields import store_field

SHUTDOWN_GRACE_S = 2.0  # how long a stopping server lets running requests finish


@dataclass
class ServeConfig:
    """Serve the labeling app (annotator page, admin dashboard, API) over a preference store."""

    store: str | None = store_field()
    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0: every interface)"})
    port: int = field(default=7860, metadata={"help": "TCP port"})
    project: str | None = field(default=None, metadata={"help": "project preselected for annotators"})
    concurrency: int = field(default=16, metadata={
        "help": "requests handled at once per page event, and JSON API calls at once in worker threads (database "
                "locks order them; on SQLite the annotator's short JSON API calls run on the event loop, one at a time)"})
    max_threads: int = field(default=40, metadata={"help": "worker threads of the web server"})
    arena_workers: int = field(default=4, metadata={
        "help": "arena projects: answers generated at once (local models and endpoint requests); more wait in a "
                "queue whose position the page shows"})
    root_path: str = field(default="", metadata={"help": "URL prefix when served behind a reverse proxy, e.g. /labeling"})
    export_dir: str | None = field(default=None, metadata={"help": "directory for dashboard exports; unset: a temporary directory"})
    forwarded_allow_ips: str | None = field(default=None, metadata={
        "help": "reverse proxies (IP[,IP...], networks as 10.0.0.0/8, * for any) whose X-Forwarded-For names the "
                "client, as uvicorn's flag; unset: the socket's address counts (sign-in throttle) and the header "
                "is ignored"})

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: expected 0..65535")
        if self.concurrency < 1 or self.max_threads < 1 or self.arena_workers < 1:
            raise ValueError("concurrency, max_threads and arena_workers: at least 1")
        self.forwarded_allow_ips = trusted_proxies(self.forwarded_allow_ips)


def trusted_proxies(text: str | None) -> str:
    """`--forwarded-allow-ips` checked and normalised ("10.0.0.1, ::1" -> "10.0.0.1,::1"; "" trusts no proxy).

    uvicorn takes any other word as a literal host name that no peer address ever equals: a typo
    would silently trust nobody, so it is refused here in one line instead.
    """
    import ipaddress

    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if items == ["*"]:
        return "*"
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False) if "/" in item else ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address or network "
                             "(e.g. 127.0.0.1,10.0.0.0/8, or * alone for any peer)") from None
    return ",".join(items)


def serve(engine, host: str = "127.0.0.1", port: int = 7860, project: str | None = None, *, block: bool = True,
          concurrency: int = 16, max_threads: int = 40, root_path: str = "", export_dir: str | Path | None = None,
          quiet: bool = False, login_policy=None, forwarded_allow_ips: str = "", arena_workers: int = 4):
    """Start the app on host:port over `engine`; returns the running Blocks (`.close()` stops it).

    block=False returns at once with the server running in a background thread (tests, demos).
    forwarded_allow_ips, arena_workers: ServeConfig's fields of those names ("" trusts no proxy).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a labeling server
    from labeling.app.build import build_app, launch_kwargs
    from labeling.app.context import AppContext
    from labeling.arena_pool import ArenaRuntime

    ctx = AppContext(engine=engine, default_project=project, export_dir=Path(export_dir) if export_dir else None,
                     arena=ArenaRuntime(arena_workers), **({"login_policy": login_policy} if login_policy else {}))
    proxies = trusted_proxies(forwarded_allow_ips)
    demo = build_app(ctx, concurrency=concurrency)
    _launch(demo, proxies, server_name=host, server_port=port, prevent_thread_lock=True, max_threads=max_threads,
            root_path=root_path, quiet=quiet, share=False,
            **launch_kwargs(ctx, concurrency, proxies_trusted=bool(proxies)))
    # Open event streams (a browser tab, an API client) would otherwise hold a shutdown forever.
    demo.server.config.timeout_graceful_shutdown = SHUTDOWN_GRACE_S
    if block:
        _wait_for_stop_signal()
        demo.close(verbose=not quiet)
    return demo


_LAUNCHING = threading.Lock()  # one launch at a time reads the environment variable set for it


def _launch(demo, proxies: str, **launch_args) -> None:
    """`demo.launch(**launch_args)` with uvicorn honouring X-Forwarded-For from `proxies` only.

    Gradio builds its uvicorn.Config inside launch() without a `forwarded_allow_ips` argument, so
    uvicorn takes $FORWARDED_ALLOW_IPS, else "127.0.0.1,::1": any local process (or a proxy on this
    host that nobody named) could then set the address the sign-in throttle counts. The variable is
    set for the launch only (an empty list trusts no peer), and the running server is checked.
    """
    with _LAUNCHING:
        before = os.environ.get("FORWARDED_ALLOW_IPS")
        os.environ["FORWARDED_ALLOW_IPS"] = proxies
        try:
            demo.launch(**launch_args)
        finally:
            if before is None:
                os.environ.pop("FORWARDED_ALLOW_IPS", None)
            else:
                os.environ["FORWARDED_ALLOW_IPS"] = before
    config = getattr(demo.server, "config", None)
    if getattr(config, "forwarded_allow_ips", None) != proxies:  # a Gradio that passes its own: refuse to serve
        demo.close()
        raise RuntimeError(f"the web server trusts X-Forwarded-For from {getattr(config, 'forwarded_allow_ips', '?')!r}"
                           f", not the {proxies!r} asked for")


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
    engine = open_store(cfg.store, create=False)
    if cfg.project:  # preselected for every annotator: a typo would greet them with an error
        with session_scope(engine, immediate=False) as session:
            get_project(session, cfg.project)
    _check_port_free(cfg.host, cfg.port)
    _warn_if_no_admin(engine)
    serve(engine, cfg.host, cfg.port, cfg.project, concurrency=cfg.concurrency, max_threads=cfg.max_threads,
          root_path=cfg.root_path, export_dir=cfg.export_dir, forwarded_allow_ips=cfg.forwarded_allow_ips,
          arena_workers=cfg.arena_workers)
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
