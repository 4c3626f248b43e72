"""The long-running processes: `assistant serve` (web server and a worker) and
`assistant worker`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from assistant.cli.common import core_errors, current_settings, open_services
from assistant.settings import Settings

WORKER_RESTART_DELAYS = (1.0, 2.0, 5.0, 15.0, 60.0)  # seconds, after successive deaths
WORKER_STABLE_SECONDS = 300.0  # a worker that ran this long starts the delays over


def _worker_command(settings: Settings, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker",
        "--loglevel", "INFO", "--concurrency", str(concurrency), "--without-gossip",
        "--without-mingle", "--hostname", f"assistant-{os.getpid()}@%h",
    ]  # fmt: skip


def _web_command(settings: Settings, workers: int) -> list[str]:
    # Every question in an answer slot or waiting for one holds a thread. Past twice that
    # capacity the app itself must still see each request and refuse it with 503 at once,
    # rather than gunicorn queueing it unseen.
    capacity = settings.load.max_concurrent_answers + settings.load.max_waiting_answers
    threads = str(2 * capacity + 8)
    return [
        sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", threads,
        "--workers", str(workers), "--bind", f"{settings.host}:{settings.port}",
        "--timeout", "300", "--access-logfile", "-", "--no-control-socket", "web:create_app()",
    ]  # fmt: skip


@click.command()
@click.option("--concurrency", default=1, show_default=True, help="Worker processes.")
def worker(concurrency: int) -> None:
    """Run a Celery ingestion worker in the foreground."""
    settings = current_settings()
    settings.ensure_dirs()
    command = _worker_command(settings, concurrency)
    os.execv(command[0], command)  # Celery itself then gets the signals (SIGTERM: warm stop)


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Its own process group (children too), its output appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen(
            command, start_new_session=True, stdout=output, stderr=subprocess.STDOUT
        )


def _startup_block(settings: Settings, password: str | None, logs: dict[str, Path]) -> str:
    """What a person starting the server needs, in one place: where, who, and the logs."""
    url = f"http://{settings.host}:{settings.port}/"
    if password is None:
        secret = "the one shown on first start (or ASSISTANT_ADMIN_PASSWORD)"
    else:
        secret = f"{password}   (shown only this once: sign in and change it)"
    lines = [
        f"Document assistant running at {url}",
        "",
        f"  Sign in:   {url}login",
        "  User:      admin",
        f"  Password:  {secret}",
        f"  Logs:      {logs['web']}",
        f"             {logs['worker']}",
        f"  Data:      {settings.resolved_data_dir}",
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(process.pid, sig)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        _kill_group(process, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait()


@click.command()
@click.option("--web-workers", default=1, show_default=True, help="Gunicorn worker processes.")
@click.option("--concurrency", default=1, show_default=True, help="Ingestion worker processes.")
@core_errors
def serve(web_workers: int, concurrency: int) -> None:
    """Run the web server and an ingestion worker; stop both with Ctrl-C. A worker that
    dies is restarted; if the web server exits, everything stops."""
    settings = current_settings()
    services = open_services()  # creates the data directory and the database tables
    password = services.accounts.ensure_first_admin()  # printed below, not in a log
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: settings.log_dir / f"{name}.log" for name in ("web", "worker")}
    commands = [_web_command(settings, web_workers), _worker_command(settings, concurrency)]
    stop = {"requested": False}

    def request_stop(*_: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    web, worker = _start(commands[0], logs["web"]), _start(commands[1], logs["worker"])
    worker_started, restart_at, restarts = time.monotonic(), None, 0
    try:
        click.echo(_startup_block(settings, password, logs))
        while not stop["requested"]:
            now = time.monotonic()
            if web.poll() is not None:
                click.echo(
                    f"the web server exited with code {web.returncode} (see {logs['web']}); "
                    "stopping",
                    err=True,
                )
                break
            if restart_at is None and worker.poll() is not None:
                # A dead worker loses nothing: its documents are still pending in the
                # database and the new worker sends them again when it starts.
                _kill_group(worker, signal.SIGKILL)  # pool children and parsing helpers
                if now - worker_started > WORKER_STABLE_SECONDS:
                    restarts = 0
                delay = WORKER_RESTART_DELAYS[min(restarts, len(WORKER_RESTART_DELAYS) - 1)]
                restarts += 1
                click.echo(
                    f"the ingestion worker exited with code {worker.returncode} "
                    f"(see {logs['worker']}); restarting it in {delay:g} s",
                    err=True,
                )
                restart_at = now + delay
            if restart_at is not None and now >= restart_at:
                worker, worker_started, restart_at = _start(commands[1], logs["worker"]), now, None
            time.sleep(0.5)
        click.echo("Stopping...")
    finally:
        _stop([web, worker])
    if not stop["requested"]:
        raise SystemExit(1)
