"""The long-running processes: `assistant serve` (web server and a worker) and
`assistant worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from assistant.cli.common import core_errors, current_settings, open_services
from assistant.settings import Settings


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


@contextmanager
def _running(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = [subprocess.Popen(command, start_new_session=True) for command in commands]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@click.command()
@click.option("--web-workers", default=1, show_default=True, help="Gunicorn worker processes.")
@click.option("--concurrency", default=1, show_default=True, help="Ingestion worker processes.")
@core_errors
def serve(web_workers: int, concurrency: int) -> None:
    """Run the web server and an ingestion worker; stop both with Ctrl-C."""
    settings = current_settings()
    open_services()  # creates the data directory and the database tables
    commands = [_web_command(settings, web_workers), _worker_command(settings, concurrency)]
    stop = {"requested": False}

    def request_stop(*_: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with _running(commands) as processes:
        click.echo(f"Document assistant running at http://{settings.host}:{settings.port}/")
        click.echo(f"Data directory: {settings.resolved_data_dir}. Press Ctrl-C to stop.")
        while not stop["requested"]:
            exited = [p for p in processes if p.poll() is not None]
            if exited:
                click.echo(f"a process exited with code {exited[0].returncode}; stopping", err=True)
                break
            time.sleep(0.5)
        click.echo("Stopping...")
    if not stop["requested"]:
        raise SystemExit(1)
