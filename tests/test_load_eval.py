"""`assistant eval load`: the summary arithmetic on hand-made samples, bad input, and a short
run against a real `assistant serve` (the real models, a worker, the embedded broker) on
documents and questions written here. No timing thresholds: only that the figures add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from assistant.cli import main
from assistant.evaluation.load import Sample, format_markdown, parse_levels, summarize
from assistant.services import build_services
from assistant.settings import load_settings
from tests.conftest import stop_process, wait_until
from tests.test_serve import free_port

DOCS = {
    "lighthouse.md": "# Lighthouse\n\nThe Kestrel Point lighthouse was automated in 1987. "
    "Its lamp is inspected every March by two licensed technicians.\n",
    "canteen.md": "# Canteen\n\nThe staff canteen opens at half past seven. "
    "Vegetarian meals carry a green leaf on the menu board.\n",
}
QUESTIONS = [
    {"id": "a1", "question": "When was the Kestrel Point lighthouse automated?",
     "answerable": True, "answers": ["1987"]},
    {"id": "a2", "question": "When does the staff canteen open?", "answerable": True,
     "answers": ["half past seven"]},
    {"id": "u1", "question": "Who painted the Mona Lisa?", "answerable": False, "answers": []},
    {"id": "u2", "question": "How tall is the harbour crane?", "answerable": False, "answers": []},
]  # fmt: skip
INGEST = {
    f"notice-{n}.txt": f"Notice {n}: the car park on level {n} is closed for repainting."
    for n in range(4)
}


def write_set(root: Path) -> Path:
    (root / "documents").mkdir(parents=True)
    for name, text in DOCS.items():
        (root / "documents" / name).write_text(text)
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return root


def invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, ["eval", "load", *args], env=env, catch_exceptions=False)


# -- logic --------------------------------------------------------------------------------------
def sample(status: int | None, outcome: str, total: float, **fields: Any) -> Sample:
    return Sample(user=0, started_s=0.0, status=status, outcome=outcome, total_s=total, **fields)


def test_summary_counts_add_up_and_percentiles_interpolate() -> None:
    ok = [
        sample(200, "answered" if t != 2 else "declined", t + 0.5, ttfb_s=float(t),
               answer_s=t + 0.5, server_ttft_s=t / 10, server_total_s=t / 5)
        for t in (1, 2, 3, 4)
    ]  # fmt: skip
    refused = [
        sample(503, "refused", 0.1, reason="capacity", retry_after=5),
        sample(503, "refused", 0.3, reason="capacity", retry_after=5),
        sample(429, "refused", 0.05, reason="rate_limit", retry_after=30),
    ]
    broken = [sample(200, "stream_error", 2.0, reason="boom"), sample(None, "connection", 0.01)]
    summary = summarize([*ok, *refused, *broken], seconds=3.0, users=4)

    assert (summary["requests"], summary["ok"], summary["errors"]) == (9, 4, 5)
    assert (summary["answered"], summary["declined"]) == (3, 1)
    assert (summary["http_503"], summary["http_429"], summary["other_errors"]) == (2, 1, 2)
    assert summary["statuses"] == {"200": 5, "429": 1, "503": 2, "None": 1}
    assert summary["error_rate"] == round(5 / 9, 4)
    assert (summary["requests_per_s"], summary["answers_per_s"]) == (3.0, round(4 / 3, 3))
    # Over the answered requests only: ttfb 1, 2, 3, 4 -> p50 2.5, p95 3.85, p99 3.97.
    assert summary["ttfb"] == {"p50": 2.5, "p95": 3.85, "p99": 3.97}
    assert summary["answer"]["p50"] == 3.0 and summary["server_ttft"]["p50"] == 0.25
    assert summary["refused_503"]["reasons"] == {"capacity": 2}
    assert summary["refused_503"]["with_retry_after"] == 2
    assert summary["refused_503"]["time"]["p50"] == 0.2
    assert summary["refused_503"]["max_time_s"] == 0.3

    empty = summarize([], seconds=1.0, users=1)
    assert empty["requests"] == 0 and empty["error_rate"] is None
    assert empty["ttfb"] == {"p50": None, "p95": None, "p99": None}


def test_markdown_has_one_row_per_level() -> None:
    level = summarize([sample(200, "answered", 1.0, ttfb_s=0.5, answer_s=1.0)], 2.0, 1)
    report = {
        "levels": [{"label": "1", **level, "ingestion": {"indexed": 3, "failed": 1}}],
        "capacity": {"source": "x", "max_concurrent": 1, "max_waiting": 4, "total": 5},
        "seconds_per_level": 2.0, "questions": 4, "user_tokens": 1,
    }  # fmt: skip
    lines = format_markdown(report).splitlines()
    assert lines[0].startswith("| users | requests | req/s")
    assert lines[2].startswith("| 1 | 1 | 0.5 | 0.5 | 0.0% | 0 | 0 | 0 | 0.50 / 0.50 / 0.50 |")
    assert lines[2].endswith("| - | 3 (1) |")


def test_levels_parse() -> None:
    assert parse_levels("5,10,20,2x") == [(5, False), (10, False), (20, False), (2, True)]
    assert parse_levels(" 3 ") == [(3, False)]


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "five", "2,,3", "-1", "x", "1.5"])
def test_a_bad_users_value_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(
        main, ["eval", "load", str(write_set(tmp_path / "set")), "--users", value],
        env={"ASSISTANT_DATA_DIR": str(tmp_path / "var")},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "Invalid value for '--users'" in result.output
    assert "is not a number of users" in result.output


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main, ["eval", "load", str(write_set(tmp_path / "set")), "--url", url, "--token", "t"],
        env={"ASSISTANT_DATA_DIR": str(tmp_path / "var")},
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"Error: cannot reach {url}" in result.output


def test_without_a_token_or_setup_it_says_what_to_give(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["eval", "load", str(write_set(tmp_path / "set"))],
        env={"ASSISTANT_DATA_DIR": str(tmp_path / "var"), "ASSISTANT_EVAL_TOKEN": ""},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "give an admin's API token with --token, or use --setup" in result.output


# -- against a real server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, str]]:
    """`assistant serve` (gunicorn and a worker) with room for 1 answer and 1 waiting, so a
    capacity of 2; yields the environment that points the CLI at its data directory."""
    port = free_port()
    env = {
        "ASSISTANT_DATA_DIR": str(tmp_path_factory.mktemp("load") / "var"),
        "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),
        "ASSISTANT_PORT": str(port),
        "ASSISTANT_LOAD__MAX_WAITING_ANSWERS": "1",
        "ASSISTANT_LOAD__RETRY_AFTER_SECONDS": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "serve"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), 120, "assistant serve to answer /healthz")
        yield {**env, "URL": url}
    finally:
        stop_process(serve)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
@pytest.mark.sqlite("one server per module outlives each test's own PostgreSQL database")
def test_a_short_load_on_a_real_server_records_every_request(
    server: dict[str, str], tmp_path: Path
) -> None:
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    for name, text in INGEST.items():
        (ingest / name).write_text(text)
    out = tmp_path / "load.json"
    args = [
        str(write_set(tmp_path / "set")),
        "--url",
        server["URL"],
        "--setup",
        "--prepare",
        "--users",
        "2,2x",
        "--duration",
        "4",
        "--ingest",
        str(ingest),
        "--json",
        str(out),
    ]
    result = invoke(args, server)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("| users | requests |")
    report = json.loads(out.read_text())

    assert report["capacity"] == {"max_concurrent": 1, "max_waiting": 1, "total": 2,
                                  "source": "the server's /metrics"}  # fmt: skip
    assert report["prepared_uploads"] == len(DOCS) and report["collection"] == "loadtest"
    assert [level["users"] for level in report["levels"]] == [2, 4]
    assert report["user_tokens"] == 6  # each level has users of its own
    finished = uploaded = 0
    for level in report["levels"]:
        samples = level["samples"]
        assert level["requests"] == len(samples) == level["ok"] + level["errors"] > 0
        assert level["ok"] == level["answered"] + level["declined"]
        assert level["errors"] == level["http_503"] + level["http_429"] + level["other_errors"]
        assert sum(level["statuses"].values()) == level["requests"]
        assert {s["user"] for s in samples} <= set(range(level["users"]))
        for s in samples:
            assert s["status"] in (200, 503, 429), s
            if s["status"] == 200:
                assert s["outcome"] in ("answered", "declined"), s
                assert s["ttfb_s"] <= s["answer_s"] <= s["total_s"]
                assert s["server_ttft_s"] is not None and s["server_total_s"] is not None
            else:
                assert s["outcome"] == "refused" and s["retry_after"] >= 1, s
        refused = [s for s in samples if s["status"] == 503]
        assert level["refused_503"]["with_retry_after"] == len(refused)
        assert sum(level["refused_503"]["reasons"].values()) == len(refused)
        ingestion = level["ingestion"]
        finished += ingestion["indexed"] + ingestion["failed"]
        uploaded += ingestion["uploaded"]
    assert finished <= uploaded <= len(INGEST)

    # Afterwards: what was ingested during the load is deleted, and its tokens are revoked.
    services = build_services(load_settings(data_dir=Path(server["ASSISTANT_DATA_DIR"])))
    assert sorted(d.filename for d in services.documents.list()) == sorted(DOCS)
    users = [u.username for u in services.accounts.list_users() if u.username.startswith("load")]
    assert len(users) == 7
    assert all(t.revoked for u in users for t in services.accounts.list_tokens(u))


@pytest.mark.slow
@pytest.mark.sqlite("one server per module outlives each test's own PostgreSQL database")
def test_bad_tokens_are_refused_with_a_clear_message(
    server: dict[str, str], tmp_path: Path
) -> None:
    directory = str(write_set(tmp_path / "set"))
    result = invoke([directory, "--url", server["URL"], "--token", "ast_not-a-token"], server)
    assert result.exit_code == 1
    assert "the server refused the token (HTTP 401)" in result.output

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("ast_not-a-token\n")
    args = [directory, "--url", server["URL"], "--setup", "--user-tokens", str(tokens)]
    result = invoke(args, server)
    assert result.exit_code == 1
    assert "user token 1:" in result.output and "HTTP 401" in result.output
