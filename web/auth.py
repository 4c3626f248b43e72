"""Sign-in and the rules every request passes through: who is asking (a server-side session
named by the cookie, or an API token), CSRF protection for cookie-authenticated changes and
for the sign-in form itself, role checks, the body limit of the route, and the request id
that every audit record of the request carries. Refusals are audited (web.refusals)."""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from assistant.accounts import InvalidCredentials, LoginThrottled, Principal
from assistant.actors import request_context
from assistant.documents import Scope
from web.bounds import allow_upload
from web.errors import error_response, wants_json
from web.refusals import deny, refuse
from web.state import services

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_ENDPOINTS = {
    "auth.login",
    "auth.login_form",
    "health.healthz",
    "health.readyz",
    "metrics.metrics",  # the view itself admits admins and local scrapers only
    "static",
}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_ID = "sid"  # the cookie's key for the server-side session's id
CSRF_FAILED = "the form expired or did not come from this site; reload it"


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]


def scope() -> Scope:
    """The collections the current user may read, from the database on every request."""
    return services().access.readable_collections(principal())


def audit(action: str, details: dict[str, Any] | None = None) -> int:
    return services().audit(g.get("principal"), action, details)


def require_role(*roles: str) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if principal().role not in roles:
                abort(403, f"this page is for the {' or '.join(roles)} role")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def csrf_token() -> str:
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _identify() -> Principal | None:
    token = _bearer_token()
    if token is not None:
        g.via_token = True
        return services().accounts.principal_for_token(token)
    session_id = session.get(SESSION_ID)
    if not isinstance(session_id, str):
        return None
    return services().accounts.principal_for_session(session_id)


def _csrf_ok() -> bool:
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get(CSRF_FIELD)
    return bool(expected) and hmac.compare_digest(str(sent), str(expected))


def _before_request() -> Response | tuple[Response | str, int] | None:
    g.request_id = uuid.uuid4().hex
    request_context.set((g.request_id, request.remote_addr))
    g.via_token = False
    g.principal = _identify()
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    if g.principal is None:
        deny(401, "not signed in" if not g.via_token else "unknown or revoked API token")
        if wants_json() or g.via_token:
            return error_response("sign in first, or send a valid API token", 401)
        return redirect(url_for("auth.login_form", next=request.full_path))
    allow_upload(g.principal.role == "admin")
    if request.method not in SAFE_METHODS and not g.via_token and not _csrf_ok():
        refuse("csrf.failed", {"method": request.method, "path": request.path[:512]})
        return error_response(CSRF_FAILED, 400)
    return None


def _after_request(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    return response


def safe_next(target: str | None, fallback: str = "ask.page") -> str:
    """Only a path on this site: never an absolute URL an attacker chose."""
    if not target:
        return url_for(fallback)
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for(fallback)
    return target


@bp.get("/login")
def login_form() -> str:
    return render_template("login.html", next=request.args.get("next", ""))


@bp.post("/login")
def login() -> Response | tuple[Response | str, int]:
    """The session is issued only once the sign-in's audit record is committed."""
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not _csrf_ok():  # a sign-in form from another site (login CSRF)
        refuse("csrf.failed", {"path": request.path, "username": username[:64]})
        return _login_failed(CSRF_FAILED, 400, username)
    if not username or not password:
        return _login_failed("enter your user name and password", 400, username)
    accounts, anonymous = services().accounts, _anonymous(username)
    try:
        user = accounts.authenticate(username, password, request.remote_addr)
    except LoginThrottled as exc:
        for counter in exc.locked:  # once, when this attempt crossed a limit
            services().audit(anonymous, "login.locked", {"username": username, "counter": counter})
        g.principal = anonymous
        refuse("login.throttled", {"username": username}, kind=username[:64])
        response, status = _login_failed(
            f"too many failed sign-ins; try again in {exc.retry_after} s", 429, username
        )
        response = current_app.make_response((response, status))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except InvalidCredentials:
        services().audit(anonymous, "login.failed", {"username": username})
        return _login_failed("wrong user name or password", 401, username)
    g.principal = user
    audit("login")  # fail closed: no record, no session (AuditError: 503, no cookie)
    session_id = accounts.start_session(user.user_id or 0)
    session.clear()
    session.permanent = True
    session[SESSION_ID] = session_id
    csrf_token()
    return redirect(safe_next(request.form.get("next")), code=303)


def _anonymous(username: str) -> Principal:
    return Principal(user_id=None, username=username[:64] or "-", role="anonymous")


def _login_failed(message: str, status: int, username: str) -> tuple[Response | str, int]:
    if wants_json():
        return error_response(message, status)
    page = render_template("login.html", error=message, username=username, next="")
    return page, status


@bp.post("/logout")
def logout() -> Response:
    audit("logout")
    session_id = session.get(SESSION_ID)
    if isinstance(session_id, str):
        services().accounts.end_session(session_id)
    session.clear()
    return redirect(url_for("auth.login_form"), code=303)


def init_auth(app: Flask) -> None:
    accounts = app.config["ASSISTANT_ACCOUNTS"]
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=accounts.secure_cookies,
        SESSION_COOKIE_NAME="assistant_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=accounts.session_hours),
        # The session ends at its absolute expiry (kept in the database); the cookie is not
        # renewed by each request.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)
