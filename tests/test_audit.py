"""The tamper-evident audit log on a real SQLite database (and one PostgreSQL run).

The tamper tests play the attacker: they edit the database and the checkpoint file directly,
with raw SQL and file writes, and `verify` must name the first bad sequence number.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.engine import Engine

import assistant.audit as audit_module
from assistant.audit import GENESIS, AuditLog, record_hash
from assistant.audit_checkpoints import Checkpoint, _create_key, canonical_json, key_fingerprint
from assistant.audit_search import AuditFilters
from assistant.cli import main
from assistant.db import make_engine, make_session_factory
from assistant.errors import AuditError
from assistant.settings import Settings, load_settings

COLUMNS = "created_at, actor_id, actor_role, action, request_id, client, details, prev_hash, hash"


def with_audit(settings: Settings, **audit: Any) -> Settings:
    """The fixture's data directory, with other audit settings."""
    overrides = {**settings.audit.model_dump(), **audit}
    return load_settings(data_dir=settings.data_dir, audit=overrides)


def open_log(settings: Settings) -> tuple[AuditLog, Engine]:
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    return AuditLog(make_session_factory(engine), settings), engine


def fill(log: AuditLog, count: int) -> None:
    for n in range(1, count + 1):
        log.record(
            actor_id=f"user-{n}",
            actor_role="staff",
            action="ask",
            details={"question": f"question {n}?", "chunks": [{"id": f"d:1:{n}", "score": 0.5}]},
            request_id=f"req-{n}",
            client="10.0.0.7",
        )


def sql(engine: Engine, statement: str, **params: Any) -> list[Any]:
    with engine.begin() as connection:
        result = connection.execute(text(statement), params)
        return list(result) if result.returns_rows else []


def flip(engine: Engine, column: str, seq: int, position: int = 1) -> None:
    """Change one character of a column (the attacker's one-byte edit)."""
    sql(
        engine,
        f"UPDATE audit_records SET {column} = substr({column}, 1, :p - 1) || "
        f"CASE WHEN substr({column}, :p, 1) = '0' THEN '1' ELSE '0' END || "
        f"substr({column}, :p + 1) WHERE seq = :seq",
        p=position,
        seq=seq,
    )


def row(engine: Engine, seq: int) -> Any:
    return sql(engine, f"SELECT {COLUMNS} FROM audit_records WHERE seq = :seq", seq=seq)[0]


def rehash_from(engine: Engine, seq: int) -> None:
    """A clever attacker recomputes the chain after an edit (only checkpoints catch this)."""
    prev = row(engine, seq - 1).hash if seq > 1 else GENESIS
    for (number,) in sql(
        engine, "SELECT seq FROM audit_records WHERE seq >= :s ORDER BY seq", s=seq
    ):
        r = row(engine, number)
        fields = {**r._asdict(), "seq": number}
        del fields["prev_hash"], fields["hash"]
        digest = record_hash(prev, fields)
        sql(
            engine,
            "UPDATE audit_records SET prev_hash = :p, hash = :h WHERE seq = :s",
            p=prev,
            h=digest,
            s=number,
        )
        prev = digest
    sql(engine, "UPDATE audit_head SET hash = :h", h=prev)


@pytest.fixture
def small(settings: Settings) -> Settings:
    return with_audit(settings, checkpoint_every=5)


@pytest.fixture
def filled(small: Settings) -> Iterator[tuple[AuditLog, Engine]]:
    """12 records; checkpoints at 5 and 10, in the table and in the file."""
    log, engine = open_log(small)
    fill(log, 12)
    yield log, engine
    engine.dispose()


def test_clean_log_verifies(filled: tuple[AuditLog, Engine], small: Settings) -> None:
    log, engine = filled
    result = log.verify()
    assert result.ok, result.problem
    assert (result.records_checked, result.checkpoints_checked) == (12, 4)  # 2 rows + 2 lines
    assert result.first_bad_seq is None
    assert "OK: 12 records" in result.summary()
    assert row(engine, 1).prev_hash == GENESIS
    assert row(engine, 2).prev_hash == row(engine, 1).hash
    assert small.signing_key_path.stat().st_mode & 0o777 == 0o600
    assert small.checkpoint_file.stat().st_mode & 0o777 == 0o600


def test_empty_log_verifies(small: Settings) -> None:
    log, _ = open_log(small)
    assert log.verify().ok
    with pytest.raises(AuditError, match="empty"):
        log.checkpoint()


def test_the_hash_is_sha256_of_prev_hash_and_canonical_json(
    filled: tuple[AuditLog, Engine],
) -> None:
    log, _ = filled
    record = log.get(3)
    assert record is not None
    fields = {k: record[k] for k in ("seq", "created_at", "actor_id", "actor_role", "action")}
    fields |= {"request_id": "req-3", "client": "10.0.0.7"}
    fields["details"] = json.dumps(
        record["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert record_hash(record["prev_hash"], fields) == record["hash"]


def swap_contents(engine: Engine, a: int, b: int) -> None:
    first, second = row(engine, a), row(engine, b)
    assignments = ", ".join(f"{c} = :{c}" for c in first._fields)
    sql(engine, f"UPDATE audit_records SET {assignments} WHERE seq = {a}", **second._asdict())
    sql(engine, f"UPDATE audit_records SET {assignments} WHERE seq = {b}", **first._asdict())


def forge(engine: Engine, seq: int, prev_hash: str, valid_hash: bool = True) -> None:
    """Insert a record at seq; anyone can compute a valid hash (the chain has no secret)."""
    fields = {**row(engine, seq - 1)._asdict(), "seq": seq, "actor_id": "mallory"}
    del fields["prev_hash"], fields["hash"]
    digest = record_hash(prev_hash, fields) if valid_hash else "f" * 64
    values = ", ".join(f":{name}" for name in ("seq", *COLUMNS.split(", ")))
    sql(
        engine,
        f"INSERT INTO audit_records (seq, {COLUMNS}) VALUES ({values})",
        **fields,
        prev_hash=prev_hash,
        hash=digest,
    )


def insert_in_middle(engine: Engine, at: int) -> None:
    """Shift records up by one and insert a forged record with a correctly computed hash."""
    query = "SELECT seq FROM audit_records WHERE seq >= :a ORDER BY seq DESC"
    for (number,) in sql(engine, query, a=at):
        sql(engine, "UPDATE audit_records SET seq = seq + 1 WHERE seq = :s", s=number)
    forge(engine, at, row(engine, at - 1).hash)


def truncate(engine: Engine, settings: Settings, *, hide: bool) -> None:
    sql(engine, "DELETE FROM audit_records WHERE seq >= 8")
    if hide:  # also remove the table's checkpoint and fix the head; the shipped file remains
        sql(engine, "DELETE FROM audit_checkpoints WHERE seq >= 8")
        sql(engine, "UPDATE audit_head SET seq = 7, hash = :h", h=row(engine, 7).hash)


def sign_with_other_key(engine: Engine, seq: int, claim_our_key: bool) -> None:
    other = Ed25519PrivateKey.generate()
    ours = sql(engine, "SELECT key_fingerprint FROM audit_checkpoints LIMIT 1")[0][0]
    fingerprint = ours if claim_our_key else key_fingerprint(other.public_key())
    unsigned = Checkpoint(
        seq, row(engine, seq).hash, "2026-01-01T00:00:00.000000Z", "", fingerprint
    )
    signature = other.sign(unsigned.payload()).hex()
    sql(
        engine,
        "INSERT INTO audit_checkpoints VALUES "
        "(:seq, :head_hash, :created_at, :sig, :key_fingerprint)",
        **unsigned.to_dict(),
        sig=signature,
    )


def edit_file_line(settings: Settings, line_seq: int, **changes: Any) -> None:
    lines = settings.checkpoint_file.read_text().splitlines()
    edited = [
        canonical_json({**json.loads(line), **changes})
        if json.loads(line)["seq"] == line_seq
        else line
        for line in lines
    ]
    settings.checkpoint_file.write_text("\n".join(edited) + "\n")


def append_line(path: Path, line: str) -> None:
    with path.open("a") as file:
        file.write(line + "\n")


def rewrite_chain(engine: Engine) -> None:
    flip(engine, "details", 7, 14)
    rehash_from(engine, 7)


Tamper = Callable[[Engine, Settings], None]
TAMPERING: dict[str, tuple[Tamper, int | None, str]] = {
    "one byte of details": (lambda e, s: flip(e, "details", 7, 14), 7, "edited"),
    "one byte of actor": (lambda e, s: flip(e, "actor_id", 4), 4, "edited"),
    "one byte of created_at": (lambda e, s: flip(e, "created_at", 3, 26), 3, "edited"),
    "one byte of prev_hash": (lambda e, s: flip(e, "prev_hash", 9, 64), 9, "does not follow"),
    "bytes that are not UTF-8": (
        lambda e, s: sql(e, "UPDATE audit_records SET client = CAST(X'FF' AS TEXT) WHERE seq = 6"),
        6,
        "unreadable",
    ),
    "delete a middle record": (
        lambda e, s: sql(e, "DELETE FROM audit_records WHERE seq = 6"),
        6,
        "missing",
    ),
    "delete the first record": (
        lambda e, s: sql(e, "DELETE FROM audit_records WHERE seq = 1"),
        1,
        "missing",
    ),
    "truncate behind a checkpoint": (lambda e, s: truncate(e, s, hide=False), 8, "truncated"),
    "truncate and hide it in the table": (lambda e, s: truncate(e, s, hide=True), 8, "truncated"),
    "append a forged record": (
        lambda e, s: forge(e, 13, row(e, 12).hash, valid_hash=False),
        13,
        "forged",
    ),
    "append a record with a valid hash": (
        lambda e, s: forge(e, 13, row(e, 12).hash),
        13,
        "not written by the application",
    ),
    # The inserted record chains correctly to its predecessor: the first provable break is
    # the shifted record after it.
    "insert a record in the middle": (lambda e, s: insert_in_middle(e, 6), 7, "does not follow"),
    "swap two records (reorder)": (lambda e, s: swap_contents(e, 3, 4), 3, "reordered"),
    # Every record is signed: the first one rewritten is named exactly (not the checkpoint).
    "rewrite the chain after an edit": (
        lambda e, s: rewrite_chain(e),
        7,
        "rewritten",
    ),
    "bad checkpoint signature (table)": (
        lambda e, s: sql(
            e,
            "UPDATE audit_checkpoints SET signature = "
            "CASE WHEN substr(signature, 1, 1) = '0' THEN '1' ELSE '0' END || substr(signature, 2) "
            "WHERE seq = 5",
        ),
        5,
        "bad signature",
    ),
    "checkpoint signed by another key, claiming ours": (
        lambda e, s: sign_with_other_key(e, 7, claim_our_key=True),
        7,
        "bad signature",
    ),
    "checkpoint signed by another key": (
        lambda e, s: sign_with_other_key(e, 8, claim_our_key=False),
        8,
        "another key",
    ),
    "checkpoint file line edited": (
        lambda e, s: edit_file_line(s, 10, head_hash=row(e, 9).hash),
        10,
        "bad signature",
    ),
    "checkpoint file line moved to another seq": (
        lambda e, s: edit_file_line(s, 10, seq=11, head_hash=row(e, 11).hash),
        11,
        "bad signature",
    ),
    "checkpoint deleted from the table": (
        lambda e, s: sql(e, "DELETE FROM audit_checkpoints WHERE seq = 5"),
        5,
        "missing from the table",
    ),
    "garbage in the checkpoint file": (
        lambda e, s: append_line(s.checkpoint_file, "not json"),
        None,
        "not a checkpoint",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_verify_names_the_first_bad_seq(
    case: str, filled: tuple[AuditLog, Engine], small: Settings
) -> None:
    log, engine = filled
    if case == "bytes that are not UTF-8" and engine.dialect.name == "postgresql":
        pytest.skip("PostgreSQL refuses text that is not UTF-8, so it cannot be stored")
    tamper, first_bad, words = TAMPERING[case]
    tamper(engine, small)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == first_bad and words in result.problem, result


def test_the_signing_key_gone_is_reported(filled: tuple[AuditLog, Engine], small: Settings) -> None:
    log, _ = filled
    small.signing_key_path.unlink()
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "signing key" in result.problem


def test_checkpoint_every_n_records_and_the_file_line_verifies(
    filled: tuple[AuditLog, Engine], small: Settings
) -> None:
    log, engine = filled
    assert [r[0] for r in sql(engine, "SELECT seq FROM audit_checkpoints ORDER BY seq")] == [5, 10]
    lines = [json.loads(line) for line in small.checkpoint_file.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [5, 10]
    key = serialization.load_pem_private_key(small.signing_key_path.read_bytes(), password=None)
    public = key.public_key()
    for line in lines:  # independently of Checkpoint.payload()
        assert line["head_hash"] == row(engine, line["seq"]).hash
        unsigned = {k: v for k, v in line.items() if k != "signature"}
        signed = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
        public.verify(bytes.fromhex(line["signature"]), signed)  # type: ignore[union-attr]
    forced = log.checkpoint()
    assert (forced.seq, forced.head_hash) == (12, row(engine, 12).hash)
    assert log.checkpoint() == forced  # idempotent at the same head
    assert len(small.checkpoint_file.read_text().splitlines()) == 3
    assert log.verify().ok


def test_checkpoint_after_the_time_limit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = {"now": datetime(2026, 5, 1, 9, 0, tzinfo=UTC)}
    monkeypatch.setattr(audit_module, "_now", lambda: clock["now"])
    log, engine = open_log(with_audit(settings, checkpoint_every=1000, checkpoint_minutes=10))
    fill(log, 3)
    assert sql(engine, "SELECT seq FROM audit_checkpoints") == []
    clock["now"] += timedelta(minutes=11)
    fill(log, 2)
    assert [r[0] for r in sql(engine, "SELECT seq FROM audit_checkpoints")] == [4]
    assert log.verify().ok


def run_threads(log: AuditLog, threads: int, each: int) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(each):
                log.record(
                    actor_id=f"t{worker}", actor_role="staff", action="ask", details={"n": n}
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not errors, errors


def assert_gap_free_and_valid(log: AuditLog, engine: Engine, total: int, every: int) -> None:
    seqs = [r[0] for r in sql(engine, "SELECT seq FROM audit_records ORDER BY seq")]
    assert seqs == list(range(1, total + 1))
    checkpoints = [r[0] for r in sql(engine, "SELECT seq FROM audit_checkpoints ORDER BY seq")]
    assert checkpoints == list(range(every, total + 1, every))
    result = log.verify()
    assert result.ok, result.problem
    assert result.records_checked == total


def test_concurrent_appends_from_threads_form_one_valid_chain(settings: Settings) -> None:
    log, engine = open_log(with_audit(settings, checkpoint_every=7))
    run_threads(log, threads=6, each=25)
    assert_gap_free_and_valid(log, engine, 150, 7)


def test_concurrent_appends_from_processes_form_one_valid_chain(settings: Settings) -> None:
    script = (
        "from assistant.audit import AuditLog\n"
        "from assistant.db import make_engine, make_session_factory\n"
        "from assistant.settings import load_settings\n"
        "s = load_settings()\n"
        "log = AuditLog(make_session_factory(make_engine(s.sqlalchemy_url)), s)\n"
        "for n in range(40):\n"
        "    log.record(actor_id='p', actor_role='staff', action='ask', details={'n': n})\n"
    )
    settings.ensure_dirs()
    env = {
        **os.environ,
        "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir),
        "ASSISTANT_AUDIT__CHECKPOINT_EVERY": "7",
    }
    make_session_factory(make_engine(settings.sqlalchemy_url))  # tables, before the race
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(3)]
    log, engine = open_log(with_audit(settings, checkpoint_every=7))
    run_threads(log, threads=2, each=20)
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert_gap_free_and_valid(log, engine, 160, 7)
    fingerprints = {json.loads(line)["key_fingerprint"] for line in settings.checkpoint_file.open()}
    assert len(fingerprints) == 1


def test_racing_key_creation_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "key.pem"
    keys: list[Ed25519PrivateKey] = []
    pool = [threading.Thread(target=lambda: keys.append(_create_key(path))) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len({key_fingerprint(k.public_key()) for k in keys}) == 1
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]  # no temporary files left


def test_a_failed_write_raises_audit_error_and_stores_nothing(settings: Settings) -> None:
    blocker = settings.resolved_data_dir / "not-a-directory"
    settings.ensure_dirs()
    blocker.write_text("")
    log, engine = open_log(with_audit(settings, checkpoint_every=1, signing_key_path=blocker / "k"))
    with pytest.raises(AuditError):
        log.record(actor_id="u", actor_role="staff", action="ask")
    assert sql(engine, "SELECT count(*) FROM audit_records")[0][0] == 0
    sql(engine, "DROP TABLE audit_records")
    with pytest.raises(AuditError, match="could not write the audit record"):
        log.record(actor_id="u", actor_role="staff", action="ask")


def test_the_log_has_no_way_to_change_or_delete_records() -> None:
    public = [name for name in dir(AuditLog) if not name.startswith("_")]
    assert sorted(public) == [
        "actions",
        "check_signing",  # readiness checks: they write nothing
        "check_writable",
        "checkpoint",
        "export",
        "get",
        "record",
        "search",
        "transaction",  # appends records (in the caller's transaction), as `record` does
        "verify",
        "was_retrieved",
    ]


def test_search_get_and_actions(filled: tuple[AuditLog, Engine]) -> None:
    log, _ = filled
    log.record(
        actor_id="admin-1", actor_role="admin", action="document.delete", details={"id": "x"}
    )
    assert log.actions() == ["ask", "document.delete"]
    assert [r["seq"] for r in log.search(action="ask", limit=3)] == [12, 11, 10]
    assert [r["seq"] for r in log.search(actor="user-4")] == [4]
    assert [r["seq"] for r in log.search(text="QUESTION 1")] == [12, 11, 10, 1]
    assert [r["seq"] for r in log.search(text="100%")] == []  # LIKE wildcards are literal
    assert [r["seq"] for r in log.search(action="ask", limit=2, offset=2)] == [10, 9]
    record = log.get(13)
    assert record is not None and record["details"] == {"id": "x"}
    assert log.get(99) is None


def test_csv_export_neutralises_formulas(small: Settings) -> None:
    log, _ = open_log(small)
    log.record(actor_id="=HYPERLINK(1)", actor_role="\tstaff", action="+ask", client="@host")
    log.record(actor_id="-2", actor_role="\rstaff", action="ask", request_id="safe")
    out = io.StringIO()
    assert log.export(out, "csv") == 2
    header, first, second = list(csv.reader(io.StringIO(out.getvalue())))
    cells = dict(zip(header, first, strict=True))
    assert (cells["actor_id"], cells["actor_role"]) == ("'=HYPERLINK(1)", "'\tstaff")
    assert (cells["action"], cells["client"]) == ("'+ask", "'@host")
    cells = dict(zip(header, second, strict=True))
    assert (cells["actor_id"], cells["actor_role"], cells["request_id"]) == (
        "'-2",
        "'\rstaff",
        "safe",
    )


def make_dated_log(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AuditLog:
    """One record at noon UTC on each of 2024-05-01..05."""
    log, _ = open_log(settings)
    for day in range(1, 6):
        moment = datetime(2024, 5, day, 12, tzinfo=UTC)
        monkeypatch.setattr(audit_module, "_now", lambda m=moment: m)
        log.record(actor_id="u", actor_role="staff", action="ask", details={"day": day})
    monkeypatch.undo()
    return log


def test_export_filters_by_date(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_dated_log(settings, monkeypatch)
    out = io.StringIO()
    count = log.export(
        out, "jsonl", AuditFilters(since=datetime(2024, 5, 2), until=datetime(2024, 5, 4))
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == 2 and [line["details"]["day"] for line in lines] == [2, 3]
    two_pm_utc = datetime(2024, 5, 2, 16, tzinfo=timezone(timedelta(hours=2)))
    assert log.export(io.StringIO(), "jsonl", AuditFilters(since=two_pm_utc)) == 3  # after noon
    assert [r["seq"] for r in log.search(since=datetime(2024, 5, 4))] == [5, 4]


# -- the CLI ------------------------------------------------------------------------------
def cli(settings: Settings, *args: str) -> Any:
    env = {"ASSISTANT_DATA_DIR": str(settings.resolved_data_dir)}
    return CliRunner().invoke(main, ["audit", *args], env=env)


def test_cli_verify_exit_codes_and_is_audited(
    filled: tuple[AuditLog, Engine], small: Settings
) -> None:
    log, engine = filled
    clean = cli(small, "verify")
    assert clean.exit_code == 0, clean.output
    assert "audit log OK: 12 records" in clean.stdout
    audited = log.get(13)
    assert audited is not None
    assert audited["action"] == "audit.verify" and audited["actor_role"] == "operator"
    assert audited["actor_id"].startswith("cli:") and audited["details"]["ok"] is True
    flip(engine, "details", 3, 14)
    tampered = cli(small, "verify")
    assert tampered.exit_code == 1
    assert "first bad seq 3" in tampered.output and "Traceback" not in tampered.output


def test_cli_verify_as_a_real_process(filled: tuple[AuditLog, Engine], small: Settings) -> None:
    _, engine = filled
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(small.resolved_data_dir)}
    command = [sys.executable, "-m", "assistant.cli", "audit", "verify"]
    clean = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert (clean.returncode, clean.stderr) == (0, ""), clean.stderr
    sql(engine, "DELETE FROM audit_records WHERE seq = 2")
    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert "first bad seq 2" in broken.stderr and "Traceback" not in broken.stderr


def test_cli_export(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = make_dated_log(settings, monkeypatch)
    output = tmp_path / "export.jsonl"
    done = cli(
        settings, "export", "--from", "2024-05-02", "--to", "2024-05-03", "--output", str(output)
    )
    assert done.exit_code == 0, done.output
    assert [json.loads(line)["details"]["day"] for line in output.open()] == [2, 3]
    assert output.stat().st_mode & 0o777 == 0o600
    as_csv = cli(settings, "export", "--format", "csv", "--from", "2024-05-05T00:00:00Z")
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["action"] for r in rows] == ["ask", "audit.export", "audit.export"]
    audited = log.search(action="audit.export")
    assert audited[-1]["details"]["from"] == "2024-05-02T00:00:00"
    assert audited[-1]["details"]["to"] == "2024-05-04T00:00:00"  # the whole last day


@pytest.mark.parametrize(
    "args",
    [
        ("--from", "yesterday"),
        ("--from", "2024-05-03", "--to", "2024-05-01"),
        ("--format", "xml"),
    ],
)
def test_cli_export_bad_input(settings: Settings, args: tuple[str, ...]) -> None:
    result = cli(settings, "export", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Error" in result.output


# -- PostgreSQL ---------------------------------------------------------------------------


def test_concurrent_appends_and_tampering_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    settings = load_settings(
        data_dir=tmp_path / "var", database_url=postgres_url, audit={"checkpoint_every": 7}
    )
    log, engine = open_log(settings)
    run_threads(log, threads=6, each=20)
    assert_gap_free_and_valid(log, engine, 120, 7)
    sql(
        engine,
        "UPDATE audit_records SET details = replace(details, '\"n\"', '\"m\"') WHERE seq = 50",
    )
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 50)
    engine.dispose()


# -- issue 14, item 5: the tail after the last checkpoint -----------------------------------
def test_records_deleted_after_the_last_checkpoint_with_the_head_moved_back_are_found(
    filled: tuple[AuditLog, Engine],
) -> None:
    """Checkpoints at 5 and 10; 11 and 12 deleted and the head row moved back to 10 (which
    verified OK before every record was signed and the signed head kept outside)."""
    log, engine = filled
    sql(engine, "DELETE FROM audit_records WHERE seq > 10")
    sql(engine, "UPDATE audit_head SET seq = 10, hash = :h", h=row(engine, 10).hash)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 11)
    assert "truncated" in result.problem and "signed head is seq 12" in result.problem


def test_a_rewrite_after_the_last_checkpoint_names_its_first_record(
    filled: tuple[AuditLog, Engine],
) -> None:
    log, engine = filled
    flip(engine, "details", 12, 14)
    rehash_from(engine, 12)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 12)
    assert "record 12 was not written by the application" in result.problem


def test_a_long_rewrite_names_its_exact_first_record(small: Settings) -> None:
    """Checkpoints every 100: a rewrite from 231 on was reported as 201 before."""
    log, engine = open_log(with_audit(small, checkpoint_every=100))
    fill(log, 260)
    flip(engine, "details", 231, 14)
    rehash_from(engine, 231)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 231), result
    engine.dispose()


def test_the_signed_head_file_moves_forward_and_its_loss_is_reported(
    filled: tuple[AuditLog, Engine], small: Settings
) -> None:
    log, _ = filled
    head = json.loads(small.head_file.read_text())
    assert head["seq"] == 12 and len(head["signature"]) == 128
    assert small.head_file.stat().st_mode & 0o777 == 0o600
    small.head_file.unlink()
    result = log.verify()
    assert not result.ok and "signed head file is missing" in result.problem


def test_a_lone_surrogate_in_details_is_recorded_not_refused(small: Settings) -> None:
    """Issue 14, item 9: JSON may carry "\\ud800"; the record keeps U+FFFD in its place."""
    log, _ = open_log(small)
    seq = log.record(actor_id="user:\udcff", actor_role="staff", action="question.refused",
                     details={"question": "why \ud800?"})  # fmt: skip
    record = log.get(seq)
    assert record is not None
    assert record["details"]["question"] == "why \ufffd?" and record["actor_id"] == "user:\ufffd"
    assert log.verify().ok
