"""What every command shares: the settings, the services, core errors as one clear line,
progress on stderr, and handing documents to the ingestion workers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import click
from sqlalchemy.exc import OperationalError

from assistant.errors import AssistantError
from assistant.settings import Settings

if TYPE_CHECKING:
    from assistant.services import Services

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def current_settings() -> Settings:
    """The settings the `main` group read for this invocation."""
    return click.get_current_context().find_object(Settings)  # type: ignore[return-value]


def open_services() -> Services:
    """Every adapter, built from the settings (models still load on first use)."""
    from assistant.services import build_services

    return build_services(current_settings())


def core_errors(command: F) -> F:
    """Show core errors, and a locked or unreachable database, as one clear line and exit 1,
    instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AssistantError as exc:
            raise click.ClickException(str(exc)) from exc
        except OperationalError as exc:  # locked past ASSISTANT_DATABASE_BUSY_SECONDS, or down
            reason = (str(exc.orig).strip().splitlines() or ["no reason given"])[0]
            raise click.ClickException(
                f"the database is busy or does not answer ({reason}); try again soon"
            ) from exc

    return wrapper  # type: ignore[return-value]


class Progress(Generic[T]):
    """Steps through `items` showing progress on stderr: a bar on a terminal, otherwise one
    plain line per item. Result lines go through `echo`, which keeps the bar readable."""

    def __init__(self, items: Sequence[T], label: str, describe: Callable[[T], str]) -> None:
        self.items = items
        self.label = label
        self.describe = describe
        self.on_terminal = sys.stderr.isatty()

    def __iter__(self) -> Iterator[T]:
        if not self.on_terminal:
            total = len(self.items)
            for number, item in enumerate(self.items, 1):
                click.echo(f"[{number}/{total}] {self.label} {self.describe(item)}", err=True)
                yield item
            return
        with click.progressbar(
            self.items, label=self.label, file=sys.stderr, item_show_func=self._show
        ) as bar:
            yield from bar

    def _show(self, item: T | None) -> str | None:
        return None if item is None else self.describe(item)

    def echo(self, line: str, err: bool = False) -> None:
        if self.on_terminal:
            sys.stderr.write("\r\x1b[K")  # erase the bar; it is drawn again on the next step
        click.echo(line, err=err)


class Workers:
    """Hands documents to running ingestion workers by task name. The worker package (and
    Celery) is imported only here, when a command is asked to queue."""

    def __init__(self, settings: Settings | None = None) -> None:
        """`settings`: send to the workers of these settings (by default, the current)."""
        from worker.app import app, client_for

        self._app = app if settings is None else client_for(settings)

    def send(self, document_id: str, force: bool = False) -> None:
        self._app.send_task("ingest_document", args=[document_id, force])
