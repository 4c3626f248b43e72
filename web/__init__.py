"""The Flask adapter: views, templates and a JSON API over the core library.

`create_app` is the application factory (there is no module-level app):
`gunicorn -k gthread --threads 4 "web:create_app()"`.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from assistant.services import Services, build_services
from assistant.settings import Settings, load_settings
from web.bounds import MULTIPART_OVERHEAD, UPLOAD_BATCH_FACTOR, init_bounds
from web.errors import register_error_handlers
from web.formatting import human_size, short_time
from web.state import EXTENSION, WebState
from web.tasks import IngestQueue, TaskSender

logger = logging.getLogger(__name__)

SECRET_KEY_FILE = "web-secret-key"
__all__ = ["MULTIPART_OVERHEAD", "UPLOAD_BATCH_FACTOR", "create_app"]


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    task_sender: IngestQueue | None = None,
) -> Flask:
    """Build the web app. Models are not loaded here: they load on first use."""
    if settings is None:
        settings = services.settings if services is not None else load_settings()
    if services is None:
        services = build_services(settings)
    if task_sender is None:
        task_sender = TaskSender(settings)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=load_secret_key(settings.resolved_data_dir / SECRET_KEY_FILE),
        ASSISTANT_MAX_UPLOAD_BYTES=settings.limits.max_upload_bytes,
        ASSISTANT_MAX_QUESTION_CHARS=settings.limits.max_question_chars,
        ASSISTANT_ACCOUNTS=settings.accounts,
    )
    init_bounds(app, settings.limits)
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.extensions[EXTENSION] = WebState(services=services, tasks=task_sender)
    app.jinja_env.filters["size"] = human_size
    app.jinja_env.filters["when"] = short_time

    from web import admin, ask, audit, batches, conversations, documents, health, sources
    from web.auth import init_auth
    from web.limits import init_limits
    from web.metrics import init_metrics
    from web.refusals import init_refusals
    from web.security import init_security

    init_security(app)
    init_refusals(app, services.audit)
    init_auth(app)
    init_limits(app, settings.load)
    init_metrics(app)
    app.register_blueprint(ask.bp)
    app.register_blueprint(conversations.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(documents.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(sources.bp)
    app.register_blueprint(health.bp)
    register_error_handlers(app)
    announce_first_admin(services)
    logger.info("web app ready (data in %s)", settings.resolved_data_dir)
    return app


def announce_first_admin(services: Services) -> None:
    """On the very first start, create the admin account; a generated password is printed
    once (set ASSISTANT_ADMIN_PASSWORD to choose it instead)."""
    password = services.accounts.ensure_first_admin()
    if password is not None:
        print(
            "\n  First start: created the admin account.\n"
            f"  user name: admin\n  password:  {password}\n"
            "  It is shown only this once. Sign in and change it, or set it with\n"
            "  `assistant users set-password admin`.\n",
            file=sys.stderr,
            flush=True,
        )


def load_secret_key(path: Path) -> str:
    """The session-signing key, made once per data directory and shared by every worker."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)  # atomic: concurrent workers agree on one key
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    return path.read_text().strip()
