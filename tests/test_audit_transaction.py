"""`AuditLog.transaction`: what a caller writes and the audit records it appends commit
together or not at all, and the signed head file never names a record that did not commit.
Real SQLite or PostgreSQL; the audit write is made to fail by a trigger, an unwritable head
file, or a caller that goes on after a failed record."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from assistant.access import Group
from assistant.audit import AuditLog
from assistant.errors import AuditError
from assistant.services import Services
from tests.test_audit import with_audit
from tests.test_hardening_access import block_audit_inserts, unblock_audit_inserts

WHO: dict[str, Any] = {"actor_id": "cli:ops", "actor_role": "operator"}


def groups(services: Services) -> list[str]:
    with services.sessions() as session:
        return list(session.scalars(select(Group.name).order_by(Group.name)))


def seqs(services: Services) -> list[int]:
    with services.sessions() as session:
        return list(session.scalars(text("SELECT seq FROM audit_records ORDER BY seq")))


def staged_heads(services: Services) -> list[str]:
    head = services.settings.head_file
    return [p.name for p in head.parent.iterdir() if p.name.startswith(f".{head.name}.")]


def test_a_change_and_its_records_commit_together(fake_services: Services) -> None:
    log = fake_services.audit_log
    log.record(action="before", **WHO)
    with log.transaction() as transaction:
        transaction.session.add(Group(name="finance"))
        first = transaction.record(action="group.create", details={"group": "finance"}, **WHO)
        second = transaction.record(action="group.note", **WHO)
    assert (first, second) == (2, 3)
    assert groups(fake_services) == ["finance"]
    assert '"seq":3' in fake_services.settings.head_file.read_text()
    assert staged_heads(fake_services) == []
    assert log.verify().ok


def test_a_record_that_fails_undoes_the_change_and_the_records_before_it(
    fake_services: Services,
) -> None:
    log = fake_services.audit_log
    log.record(action="before", **WHO)
    head_file = fake_services.settings.head_file.read_text()
    block_audit_inserts(fake_services, action="group.note")
    with pytest.raises(AuditError, match="audit inserts blocked"), log.transaction() as t:
        t.session.add(Group(name="finance"))
        t.record(action="group.create", details={"group": "finance"}, **WHO)
        t.record(action="group.note", **WHO)
    assert groups(fake_services) == [] and seqs(fake_services) == [1]
    assert fake_services.settings.head_file.read_text() == head_file
    assert staged_heads(fake_services) == []
    assert log.record(action="after", **WHO) == 2  # the chain goes on where it was
    assert log.verify().ok


def test_a_caller_that_goes_on_after_a_failed_record_cannot_commit(
    fake_services: Services,
) -> None:
    """On SQLite a failed INSERT undoes only itself: the head row's move must not commit."""
    log = fake_services.audit_log
    log.record(action="before", **WHO)
    block_audit_inserts(fake_services, action="group.create")
    with pytest.raises(AuditError, match="was not written"), log.transaction() as t:
        t.session.add(Group(name="finance"))
        with pytest.raises(AuditError):
            t.record(action="group.create", **WHO)
    assert groups(fake_services) == [] and seqs(fake_services) == [1]
    assert log.record(action="after", **WHO) == 2
    assert log.verify().ok


def test_an_unwritable_head_file_stops_the_commit(fake_services: Services) -> None:
    """The signed head is staged before the commit: a folder it cannot be written to fails
    the transaction, rather than leaving a committed record the head file does not name."""
    blocker = fake_services.settings.resolved_data_dir / "not-a-directory"
    blocker.write_text("")
    settings = with_audit(fake_services.settings, head_file=blocker / "head.json")
    log = AuditLog(fake_services.sessions, settings)
    with pytest.raises(AuditError), log.transaction(fake_services.sessions) as t:
        t.session.add(Group(name="finance"))
        t.record(action="group.create", **WHO)
    with pytest.raises(AuditError, match="could not write the audit record"):
        log.record(action="alone", **WHO)
    assert groups(fake_services) == [] and seqs(fake_services) == []
    assert fake_services.audit_log.record(action="after", **WHO) == 1


def test_the_first_record_of_a_fresh_log_creates_its_head_in_the_change(
    fake_services: Services,
) -> None:
    """No head row yet: it is made in the change's transaction, and undone with it."""
    with fake_services.sessions.begin() as session:
        session.execute(text("DELETE FROM audit_head"))
        assert session.scalar(text("SELECT count(*) FROM audit_records")) == 0
    log = fake_services.audit_log
    block_audit_inserts(fake_services)
    with pytest.raises(AuditError), log.transaction() as t:
        t.record(action="group.create", **WHO)
    with fake_services.sessions() as session:
        assert session.scalar(text("SELECT count(*) FROM audit_head")) == 0
    unblock_audit_inserts(fake_services)
    with log.transaction() as t:
        t.session.add(Group(name="finance"))
        assert t.record(action="group.create", **WHO) == 1
    assert groups(fake_services) == ["finance"] and log.verify().ok
