"""Users, groups and collections: `assistant users|groups|collections ...`. Every change
is made as the local operator and audited by the core services."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from assistant.accounts import ROLES, Principal
from assistant.cli.common import core_errors, open_services

if TYPE_CHECKING:
    from assistant.access import AccessService
    from assistant.accounts import AccountService


def _accounts() -> tuple[AccountService, Principal]:
    """The account service (its changes are audited) and the CLI's operator principal."""
    return open_services().accounts, Principal.operator()


def _access() -> tuple[AccessService, Principal]:
    """The access service (its changes are audited) and the CLI's operator principal."""
    return open_services().access, Principal.operator()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def users() -> None:
    """Manage user accounts (roles: staff, admin, auditor)."""


@users.command(name="add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--group", "groups", multiple=True, help="A group to join (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@core_errors
def users_add(username: str, role: str, groups: tuple[str, ...], password_stdin: bool) -> None:
    """Add a user; the password is prompted for (or read from stdin)."""
    accounts, operator = _accounts()
    accounts.add_user(username, _read_password(password_stdin), role, groups, actor=operator)
    click.echo(f"added user {username} ({role})")


@users.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
@core_errors
def users_list(as_json: bool) -> None:
    """List the users, their roles and groups."""
    accounts, _ = _accounts()
    found = accounts.list_users()
    if as_json:
        click.echo(json.dumps([user.to_dict() for user in found], indent=2))
        return
    for user in found:
        state = "disabled" if user.disabled else "active"
        groups = ",".join(user.groups) or "-"
        click.echo(f"{user.username:<24} {user.role:<8} {state:<8} {groups}")


@users.command(name="disable")
@click.argument("username")
@core_errors
def users_disable(username: str) -> None:
    """Disable a user: no login, and their API tokens stop working."""
    accounts, operator = _accounts()
    accounts.disable_user(username, actor=operator)
    click.echo(f"disabled user {username}")


@users.command(name="enable")
@click.argument("username")
@core_errors
def users_enable(username: str) -> None:
    """Enable a disabled user again."""
    accounts, operator = _accounts()
    accounts.enable_user(username, actor=operator)
    click.echo(f"enabled user {username}")


@users.command(name="set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@core_errors
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set a user's password."""
    accounts, operator = _accounts()
    accounts.get_user(username)  # fail before prompting for a password
    accounts.set_password(username, _read_password(password_stdin), actor=operator)
    click.echo(f"password changed for {username}")


@users.command(name="set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
@core_errors
def users_set_role(username: str, role: str) -> None:
    """Change a user's role."""
    accounts, operator = _accounts()
    accounts.set_role(username, role, actor=operator)
    click.echo(f"{username} is now {role}")


@users.command(name="token")
@click.argument("username")
@click.option("--name", required=True, help="What the token is for, e.g. a script's name.")
@core_errors
def users_token(username: str, name: str) -> None:
    """Issue an API token for a user; it is printed once and cannot be shown again."""
    accounts, operator = _accounts()
    click.echo(accounts.issue_token(username, name, actor=operator))


@users.command(name="tokens")
@click.argument("username")
@core_errors
def users_tokens(username: str) -> None:
    """List a user's API tokens (never the tokens themselves)."""
    accounts, _ = _accounts()
    for token in accounts.list_tokens(username):
        used = token.last_used_at.isoformat() + "Z" if token.last_used_at else "never used"
        state = "revoked" if token.revoked else "active"
        click.echo(f"{token.id:<6} {token.name:<24} {state:<8} {used}")


@users.command(name="revoke-token")
@click.argument("token_id", type=int)
@core_errors
def users_revoke_token(token_id: int) -> None:
    """Revoke an API token by its id (see `users tokens`)."""
    accounts, operator = _accounts()
    accounts.revoke_token(token_id, actor=operator)
    click.echo(f"revoked token {token_id}")


@click.group()
def groups() -> None:
    """Manage groups; collections grant read access to groups."""


@groups.command(name="create")
@click.argument("name")
@core_errors
def groups_create(name: str) -> None:
    """Create a group."""
    access, operator = _access()
    access.create_group(name, actor=operator)
    click.echo(f"created group {name}")


@groups.command(name="delete")
@click.argument("name")
@core_errors
def groups_delete(name: str) -> None:
    """Delete a group, its memberships and its read grants."""
    access, operator = _access()
    access.delete_group(name, actor=operator)
    click.echo(f"deleted group {name}")


@groups.command(name="list")
@core_errors
def groups_list() -> None:
    """List the groups and their members."""
    access, _ = _access()
    for group in access.list_groups():
        members = ",".join(group.members) or "-"
        click.echo(f"{group.name:<24} {members}")


@groups.command(name="add-member")
@click.argument("group")
@click.argument("username")
@core_errors
def groups_add_member(group: str, username: str) -> None:
    """Add a user to a group."""
    access, operator = _access()
    access.add_member(group, username, actor=operator)
    click.echo(f"{username} is in group {group}")


@groups.command(name="remove-member")
@click.argument("group")
@click.argument("username")
@core_errors
def groups_remove_member(group: str, username: str) -> None:
    """Remove a user from a group."""
    access, operator = _access()
    access.remove_member(group, username, actor=operator)
    click.echo(f"{username} left group {group}")


@click.group()
def collections() -> None:
    """Manage collections: every document belongs to one; groups are granted reading."""


@collections.command(name="create")
@click.argument("name")
@click.option("--reader", "readers", multiple=True, help="A group that may read it (repeatable).")
@click.option("--description", default="", help="What the collection holds.")
@core_errors
def collections_create(name: str, readers: tuple[str, ...], description: str) -> None:
    """Create a collection."""
    access, operator = _access()
    access.create_collection(name, readers, description, actor=operator)
    click.echo(f"created collection {name}")


@collections.command(name="list")
@core_errors
def collections_list() -> None:
    """List the collections and the groups that may read them."""
    access, _ = _access()
    for collection in access.list_collections():
        readers = ",".join(collection.readers) or "-"
        click.echo(f"{collection.name:<24} readers: {readers:<32} {collection.description}")


@collections.command(name="set-readers")
@click.argument("name")
@click.argument("groups", nargs=-1)
@core_errors
def collections_set_readers(name: str, groups: tuple[str, ...]) -> None:
    """Replace the groups that may read a collection (none: only admins)."""
    access, operator = _access()
    access.set_readers(name, groups, actor=operator)
    click.echo(f"{name} readers: {', '.join(sorted(set(groups))) or 'none (admins only)'}")
