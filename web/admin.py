"""The admin page: users, groups, collections and API tokens. Every change is audited by the
account and access services themselves, with the admin as the actor. The review page lists
the answers staff disliked and the questions answered "not found"; reading it is audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from assistant.accounts import ROLES
from assistant.errors import InvalidInput
from web.auth import audit, principal, require_role
from web.state import services

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@require_role("admin")
def _admins_only() -> None:
    return None


@bp.get("")
def page(new_token: dict[str, str] | None = None) -> str:
    accounts, access = services().accounts, services().access
    return render_template(
        "admin.html",
        new_token=new_token,
        users=accounts.list_users(),
        groups=access.list_groups(),
        collections=access.list_collections(),
        roles=ROLES,
    )


def _field(name: str) -> str:
    value = request.form.get(name, "").strip()
    if not value:
        raise InvalidInput(f'fill in "{name.replace("_", " ")}"')
    return value


def _done(message: str) -> Response:
    flash(message, "success")
    return redirect(url_for("admin.page"), code=303)


def _change(action: Callable[[], Any], message: Callable[[], str]) -> Response:
    """Run one change; a bad value is shown on the page instead of an error page."""
    try:
        action()
    except InvalidInput as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.page"), code=303)
    return _done(message())


@bp.post("/users")
def add_user() -> Response:
    accounts, actor = services().accounts, principal()
    groups = request.form.getlist("groups")
    return _change(
        lambda: accounts.add_user(
            _field("username"), _field("password"), _field("role"), groups, actor=actor
        ),
        lambda: f"user {request.form['username'].strip().lower()} added",
    )


@bp.post("/users/<username>/<any(disable, enable):change>")
def toggle_user(username: str, change: str) -> Response:
    accounts, actor = services().accounts, principal()
    if change == "disable" and username == actor.username:
        flash("you cannot disable your own account", "error")
        return redirect(url_for("admin.page"), code=303)
    method = accounts.disable_user if change == "disable" else accounts.enable_user
    return _change(lambda: method(username, actor=actor), lambda: f"user {username} {change}d")


@bp.post("/users/<username>/token")
def issue_token(username: str) -> Response | str:
    """The token is shown once, on this page: it never goes into a cookie or a redirect."""
    try:
        token = services().accounts.issue_token(username, _field("token_name"), actor=principal())
    except InvalidInput as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.page"), code=303)
    return page(new_token={"username": username, "token": token})


@bp.post("/groups")
def create_group() -> Response:
    access = services().access
    return _change(
        lambda: access.create_group(_field("group"), actor=principal()),
        lambda: f"group {request.form['group'].strip().lower()} created",
    )


@bp.post("/groups/<group>/members")
def add_member(group: str) -> Response:
    access = services().access
    return _change(
        lambda: access.add_member(group, _field("username"), actor=principal()),
        lambda: f"{request.form['username'].strip()} added to {group}",
    )


@bp.post("/groups/<group>/members/<username>/remove")
def remove_member(group: str, username: str) -> Response:
    access = services().access
    return _change(
        lambda: access.remove_member(group, username, actor=principal()),
        lambda: f"{username} removed from {group}",
    )


@bp.post("/collections")
def create_collection() -> Response:
    access = services().access
    return _change(
        lambda: access.create_collection(
            _field("collection"), request.form.getlist("readers"), actor=principal()
        ),
        lambda: f"collection {request.form['collection'].strip().lower()} created",
    )


@bp.post("/collections/<collection>/readers")
def set_readers(collection: str) -> Response:
    access = services().access
    return _change(
        lambda: access.set_readers(collection, request.form.getlist("readers"), actor=principal()),
        lambda: f"readers of {collection} updated",
    )


REVIEW_LIMIT = 100  # answers in each list of the review page


@bp.get("/review")
def review() -> str:
    """Answers to look at: thumbs-down ones with their comments, and the questions answered
    "not found". Reading them is audited before the page is sent."""
    conversations = services().conversations
    disliked = conversations.review("disliked", REVIEW_LIMIT)
    declined = conversations.review("declined", REVIEW_LIMIT)
    shown = {"page": "/admin/review", "disliked": len(disliked), "declined": len(declined)}
    audit("answers.reviewed", shown)
    return render_template(
        "admin_review.html", disliked=disliked, declined=declined, limit=REVIEW_LIMIT
    )
