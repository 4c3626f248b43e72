"""The `assistant` command on a fresh data directory: as a real process (with the packaged
models where they are needed), and in this process with the fast fake embedder and
generator for the logic around them (folders, duplicates, reindexing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import assistant.services
from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.cli import main
from assistant.embedding import HashingEmbedder
from assistant.index_check import SETTINGS_KEY, IndexMeta, index_settings
from assistant.services import Services
from assistant.settings import Settings, load_settings
from tests.documents import MARKDOWN

# About 4,000 characters of prose: several chunks at the default size (1,000 characters).
HANDBOOK = "\n\n".join(
    f"Section {n}. The archive room on floor {n} keeps the records of department {n} for "
    f"{n + 5} years. Visitors sign the register at desk {n} and return keys by {n + 4} pm. "
    f"Fire drills for floor {n} happen every {n + 1} months, led by warden number {n}."
    for n in range(1, 17)
)


def run_cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), **env},
        timeout=600,
    )


@pytest.mark.slow
def test_ingest_then_ask_then_status_share_one_data_dir(tmp_path: Path) -> None:
    source = tmp_path / "compliance.md"
    source.write_text(MARKDOWN)
    data_dir = tmp_path / "fresh"
    ingested = run_cli(data_dir, "ingest", str(source))
    assert ingested.returncode == 0, ingested.stderr
    assert "indexed   compliance.md" in ingested.stdout

    asked = run_cli(data_dir, "ask", "Who chairs the quarterly compliance review?")
    assert asked.returncode == 0, asked.stderr
    assert "Sources:" in asked.stdout
    assert "[1] compliance.md" in asked.stdout

    status = run_cli(data_dir, "status", "--json")
    assert json.loads(status.stdout)["counts"]["indexed"] == 1


def test_bad_files_are_reported_and_the_good_ones_still_ingest(tmp_path: Path) -> None:
    good = tmp_path / "notes.txt"
    good.write_text("The archive room is on the second floor.")
    unsupported = tmp_path / "tool.exe"
    unsupported.write_bytes(b"MZ")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Résumé".encode("latin-1"))
    data_dir = tmp_path / "var"
    result = run_cli(
        data_dir, "ingest", str(good), str(unsupported), str(tmp_path / "missing.md"), str(latin)
    )
    assert result.returncode == 1
    assert "tool.exe: unsupported file type (.exe)" in result.stderr
    assert "missing.md: no such file" in result.stderr
    assert "latin.txt" in result.stderr and "not valid UTF-8" in result.stderr
    assert "indexed   notes.txt" in result.stdout
    assert "[1/4] ingesting notes.txt" in result.stderr  # stderr is not a terminal: plain lines
    assert "Traceback" not in result.stderr


def test_empty_and_overlong_questions(tmp_path: Path) -> None:
    empty = run_cli(tmp_path, "ask", "  ")
    assert empty.returncode == 1
    assert "Error: the question is empty" in empty.stderr
    long = run_cli(tmp_path, "ask", "why " * 300)
    assert long.returncode == 1
    assert "the limit is 1000" in long.stderr


def test_invalid_settings_fail_fast_with_the_variable_name(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "status", ASSISTANT_PORT="not-a-port")
    assert result.returncode == 1
    assert "ASSISTANT_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_queue_hands_documents_to_the_workers_by_task_name(tmp_path: Path) -> None:
    """No worker runs: the messages wait in the embedded queue, and nothing is embedded."""
    source = tmp_path / "compliance.md"
    source.write_text(MARKDOWN)
    data_dir = tmp_path / "var"
    queued = run_cli(data_dir, "ingest", "--queue", str(source))
    assert queued.returncode == 0, queued.stderr
    assert "queued    compliance.md" in queued.stdout
    rebuilt = run_cli(data_dir, "reindex", "--all", "--queue")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "queued    compliance.md" in rebuilt.stdout
    messages = sorted((data_dir / "broker" / "queue").iterdir())
    assert len(messages) == 2
    assert all("ingest_document" in message.read_text() for message in messages)
    status = run_cli(data_dir, "status", "--json")
    assert json.loads(status.stdout)["counts"]["queued"] == 1


# -- in this process, with the fast fake embedder and generator -----------------------------
class InProcessCli:
    """Runs `assistant ...` in this process on one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self, *args: str, **env: str) -> Result:
        env = {"ASSISTANT_DATA_DIR": str(self.data_dir), **env}
        return CliRunner().invoke(main, list(args), env=env)

    def services(self, **overrides: object) -> Services:
        return assistant.services.build_services(load_settings(data_dir=self.data_dir, **overrides))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InProcessCli:
    """Every command builds its services with the hashing embedder and extractive generator."""
    build = assistant.services.build_services

    def build_fake(settings: Settings | None = None, **_: object) -> Services:
        return build(settings, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator())

    monkeypatch.setattr(assistant.services, "build_services", build_fake)
    return InProcessCli(tmp_path / "var")


def test_ingest_walks_a_folder(cli: InProcessCli, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".git").mkdir()
    (docs / "guide.md").write_text(MARKDOWN)
    (docs / ".hidden.md").write_text("A hidden note.")
    (docs / ".git" / "config.md").write_text("Hidden folder.")
    (docs / "sub" / "notes.txt").write_text("The archive room is on the second floor.")
    (docs / "sub" / "copy.md").write_text(MARKDOWN)
    (docs / "sub" / "tool.exe").write_bytes(b"MZ")

    result = cli("ingest", str(docs))
    assert result.exit_code == 0, result.output
    assert "indexed   guide.md" in result.stdout
    assert "indexed   notes.txt" in result.stdout
    assert f"duplicate {docs / 'sub' / 'copy.md'}: copy.md: duplicate of guide.md" in result.stdout
    assert f"skipped   {docs / 'sub' / 'tool.exe'}" in result.stdout
    assert "tool.exe: unsupported file type (.exe)" in result.stdout
    assert ".hidden" not in result.output and "config.md" not in result.output
    assert "[1/3] ingesting guide.md" in result.stderr
    assert "[3/3] ingesting notes.txt" in result.stderr
    assert "2 indexed, 1 duplicate" in result.stderr

    services = cli.services()
    assert sorted(d.filename for d in services.documents.list()) == ["guide.md", "notes.txt"]
    uploads = services.audit_log.search(action="document.upload")
    assert sorted(record["details"]["filename"] for record in uploads) == ["guide.md", "notes.txt"]


def test_ingest_into_a_collection(cli: InProcessCli, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("The archive room is on the second floor.")
    unknown = cli("ingest", "--collection", "nope", str(source))
    assert unknown.exit_code != 0
    assert "no collection 'nope'; there are: default" in unknown.output
    assert cli.services().documents.list() == []

    assert cli("collections", "create", "hr").exit_code == 0
    result = cli("ingest", "--collection", "hr", str(source))
    assert result.exit_code == 0, result.output
    assert [d.collection for d in cli.services().documents.list()] == ["hr"]


def test_reindex_verify_repairs_the_indexes(cli: InProcessCli, tmp_path: Path) -> None:
    source = tmp_path / "handbook.txt"
    source.write_text(HANDBOOK)
    assert cli("ingest", str(source)).exit_code == 0

    clean = cli("reindex", "--verify")
    assert clean.exit_code == 0, clean.output
    assert "index consistent with the database" in clean.stdout

    services = cli.services()
    lost = sorted(services.store.ids())[:2]
    services.store.delete_ids(lost)
    services.keywords.upsert([("stray:1:0", "stray", "default", "ghost text")])
    repaired = cli("reindex", "--verify")
    assert repaired.exit_code == 0, repaired.output
    assert "repaired (missing vectors: 2, extra keyword rows: 1)" in repaired.stdout
    assert set(lost) <= cli.services().store.ids()

    again = cli("reindex", "--verify", "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["consistent"] is True and report["after_repair"] is None
    assert report["found"]["expected_chunks"] == services.documents.list()[0].chunk_count > 2

    verified = services.audit_log.search(action="index.verify")
    assert [record["details"]["consistent"] for record in verified] == [True, True, True]
    assert verified[1]["details"]["found"]["missing_vectors"] == 2


def test_reindex_all_after_a_chunking_change(cli: InProcessCli, tmp_path: Path) -> None:
    handbook, notes = tmp_path / "handbook.txt", tmp_path / "notes.txt"
    handbook.write_text(HANDBOOK)
    notes.write_text("The archive room is on the second floor.")
    assert cli("ingest", str(handbook)).exit_code == 0
    before = cli.services().documents.list()[0].chunk_count

    smaller = {"ASSISTANT_CHUNKING__SIZE": "400", "ASSISTANT_CHUNKING__OVERLAP": "50"}
    refused = cli("ingest", str(notes), **smaller)
    assert refused.exit_code == 1
    assert "failed    notes.txt" in refused.stderr
    assert "rebuild it with `assistant reindex --all`" in refused.stderr

    rebuilt = cli("reindex", "--all", **smaller)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "indexed   handbook.txt" in rebuilt.stdout
    assert "indexed   notes.txt" in rebuilt.stdout  # the refused one is ingested now
    assert "[2/2] ingesting notes.txt" in rebuilt.stderr

    services = cli.services(chunking={"size": 400, "overlap": 50})
    with services.sessions() as session:
        built = json.loads(session.get(IndexMeta, SETTINGS_KEY).value)
    assert built == index_settings(services.embedder.name, services.settings.chunking)
    assert built["chunk_size"] == 400
    documents = {d.filename: d for d in services.documents.list()}
    assert documents["handbook.txt"].chunk_count > before
    assert services.index.verify().consistent
    [rebuild] = services.audit_log.search(action="index.rebuild")
    assert rebuild["details"]["settings"]["chunk_size"] == 400


def test_reindex_documents_by_id(cli: InProcessCli, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("The archive room is on the second floor.")
    assert cli("ingest", str(source)).exit_code == 0
    [document] = cli.services().documents.list()

    result = cli("reindex", document.id)
    assert result.exit_code == 0, result.output
    assert f"indexed   notes.txt  id={document.id}" in result.stdout
    [record] = cli.services().audit_log.search(action="document.reingest")
    assert record["details"]["document_id"] == document.id

    missing = cli("reindex", "no-such-id")
    assert missing.exit_code == 1
    assert "no document no-such-id" in missing.output
    mixed = cli("reindex", document.id, "--all")
    assert mixed.exit_code == 2
    assert "exactly one" in mixed.output
    assert cli("reindex", "--all", "--verify").exit_code == 2


def test_eval_calibrate_refuses_bad_reports_clearly(tmp_path: Path) -> None:
    """Not an `eval qa` report, or too few answers to fit: one clear line, exit 1."""
    not_a_report = tmp_path / "other.json"
    not_a_report.write_text('{"answer_f1": 0.5}')
    result = CliRunner().invoke(main, ["eval", "calibrate", str(not_a_report)])
    assert result.exit_code == 1 and "not an `eval qa` report" in result.output
    rows = [{"answerable": True, "route": "small", "signals": {"support": 1.0},
             "candidate": "x", "candidate_recall": 1.0}]  # fmt: skip
    too_few = tmp_path / "few.json"
    too_few.write_text(json.dumps({"questions": rows}))
    result = CliRunner().invoke(main, ["eval", "calibrate", str(too_few), "--route", "small"])
    assert result.exit_code == 1 and "at least 10 answers" in result.output
    assert "Traceback" not in result.output
