"""The `assistant` command on a fresh data directory, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.documents import MARKDOWN


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
