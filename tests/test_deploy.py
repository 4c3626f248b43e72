"""The deployment files: docker-compose.yml, deploy/ (env example, systemd units, nginx site,
backup and restore scripts).

Docker cannot run on this machine, so the compose file is checked by its structure only. The
backup and restore scripts run for real on a data directory built by the product (SQLite,
and the machine's PostgreSQL), and the restored copy must answer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from assistant.answering.generation import ExtractiveFakeGenerator
from assistant.embedding import HashingEmbedder
from assistant.services import Services, build_services
from assistant.settings import LimitSettings, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "assistant.env.example"
ASSISTANT_CLI = Path(sys.executable).parent / "assistant"
LONG_RUNNING = ("web", "worker", "redis", "postgres", "chroma")

HANDBOOK = (
    "# Harbour rules\n\n"
    "The harbour master is Ines Ferreira. Ferries are serviced every April at the Dunmore "
    "yard, and the slipway closes at nine in the evening.\n"
)
QUESTION = "Who is the harbour master?"


# -- docker-compose.yml -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command_text(test: list[str] | str) -> str:
    return test if isinstance(test, str) else " ".join(test)


def test_compose_defines_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {*LONG_RUNNING, "migrate"}
    for name in ("web", "worker", "migrate"):
        build = compose["services"][name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        env_files = compose["services"][name]["env_file"]
        assert any("deploy/assistant.env.example" in path for path in env_files)
    # The official Chroma server image, pinned to a 1.x release.
    assert re.fullmatch(r"chromadb/chroma:1\.\d+\.\d+", compose["services"]["chroma"]["image"])


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
    assert "/healthz" in _command_text(services["web"]["healthcheck"]["test"])
    assert "redis-cli ping" in _command_text(services["redis"]["healthcheck"]["test"])
    assert "pg_isready" in _command_text(services["postgres"]["healthcheck"]["test"])
    assert "/api/v2/heartbeat" in _command_text(services["chroma"]["healthcheck"]["test"])
    assert "inspect ping" in _command_text(services["worker"]["healthcheck"]["test"])
    assert services["migrate"]["restart"] == "no"  # one-shot


def test_only_web_publishes_a_port_and_nothing_reaches_outside(compose: dict[str, Any]) -> None:
    services, networks = compose["services"], compose["networks"]
    internal = [name for name, network in networks.items() if (network or {}).get("internal")]
    assert internal == ["internal"]
    for name, service in services.items():
        assert "internal" in service["networks"], f"{name} is not on the internal network"
        if name != "web":
            assert "ports" not in service, f"{name} publishes a port"
            assert service["networks"] == ["internal"], f"{name} has another network"
    # Web's port is published on the host's loopback only (nginx terminates TLS in front).
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]
    [edge] = set(services["web"]["networks"]) - {"internal"}
    options = networks[edge]["driver_opts"]
    assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"


def test_workers_scale_and_wait_for_the_schema(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "container_name" not in services["worker"]  # `--scale worker=N`
    for name in ("web", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = {
        volume.split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }
    assert used <= declared
    assert {"assistant-data", "assistant-audit", "postgres-data", "redis-data"} <= used
    assert "chroma-data" in used


def test_the_migrate_command_creates_the_schema(compose: dict[str, Any], tmp_path: Path) -> None:
    """The migrate service's real command, run here on SQLite instead of PostgreSQL."""
    command = compose["services"]["migrate"]["command"]
    assert command[0] == "python"
    env = {**_clean_environment(), "ASSISTANT_DATA_DIR": str(tmp_path / "data")}
    subprocess.run([sys.executable, *command[1:]], env=env, check=True, timeout=120)
    tables = _sqlite_tables(tmp_path / "data" / "assistant.db")
    assert {"documents", "chunks", "audit_records"} <= tables


# -- deploy/assistant.env.example ----------------------------------------------------------
def _settings_fields(model: type[BaseModel], prefix: str = "ASSISTANT_") -> dict[str, FieldInfo]:
    """Every environment variable name of the Settings model, nested models included."""
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        variable = prefix + name.upper()
        # A model or an optional model nests; a dict of models (JSON) is one variable.
        union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        options = typing.get_args(field.annotation) if union else (field.annotation,)
        nested = [t for t in options if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested:
            fields |= _settings_fields(nested[0], variable + "__")
        else:
            fields[variable] = field
    return fields


def _env_example_lines() -> list[tuple[bool, str, str]]:
    """(commented, name, value) of every "NAME=value" or "# NAME=value" line."""
    pattern = re.compile(r"^(#\s*)?(ASSISTANT_[A-Z0-9_]+)=(.*)$")
    return [
        (bool(match[1]), match[2], match[3])
        for line in ENV_EXAMPLE.read_text().splitlines()
        if (match := pattern.match(line))
    ]


def test_the_env_example_documents_every_setting() -> None:
    documented = {name for _, name, _ in _env_example_lines()}
    settings = set(_settings_fields(Settings))
    assert sorted(settings - documented) == [], "settings missing from assistant.env.example"
    assert sorted(documented - settings) == [], "assistant.env.example names unknown settings"


def test_the_env_example_shows_the_true_defaults() -> None:
    fields = _settings_fields(Settings)
    defaults = [(name, value) for commented, name, value in _env_example_lines() if commented]
    assert {name for name, _ in defaults} == set(fields), "each setting needs a default line"
    for name, value in defaults:
        field = fields[name]
        if value == "":  # unset: the default is None or computed (e.g. all CPU cores)
            assert field.default is None or field.default_factory is not None, name
        else:
            parsed = TypeAdapter(field.annotation).validate_python(value)
            assert parsed == field.default, f"{name}: documented {value!r}, is {field.default!r}"


def test_the_env_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in list(os.environ):
        if variable.startswith("ASSISTANT_"):
            monkeypatch.delenv(variable)
    for _, name, value in _env_example_lines():
        if value:
            monkeypatch.setenv(name, value)  # active lines come after their default
    settings = load_settings()
    assert settings.data_dir == Path("/var/lib/assistant")
    assert settings.broker_url == "redis://127.0.0.1:6379/0"


# -- systemd units and nginx -----------------------------------------------------------------
def _unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (continuation lines joined)."""
    text = (DEPLOY / name).read_text().replace("\\\n", " ")
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", ["assistant-web.service", "assistant-worker.service"])
def test_systemd_units_are_hardened(name: str) -> None:
    unit = _unit(name)
    data_dir = next(v for c, n, v in _env_example_lines() if n == "ASSISTANT_DATA_DIR" and not c)
    assert unit["EnvironmentFile"] == ["/etc/assistant.env"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["PrivateTmp"] == ["yes"]
    assert unit["ReadWritePaths"] == [data_dir]
    assert unit["Restart"] == ["on-failure"]
    assert unit["User"] == ["assistant"]
    assert unit["IPAddressDeny"] == ["any"]


def test_the_web_unit_trusts_forwarded_headers_from_nginx_only() -> None:
    [command] = _unit("assistant-web.service")["ExecStart"]
    assert "--forwarded-allow-ips=127.0.0.1" in command
    assert "--bind 127.0.0.1:8000" in command


def test_nginx_site_streams_answers_and_accepts_a_full_upload_batch() -> None:
    from web import MULTIPART_OVERHEAD, UPLOAD_BATCH_FACTOR

    site = (DEPLOY / "nginx" / "assistant.conf").read_text()
    [size] = re.findall(r"^\s*client_max_body_size (\d+)m;", site, re.MULTILINE)
    largest_request = LimitSettings().max_upload_bytes * UPLOAD_BATCH_FACTOR + MULTIPART_OVERHEAD
    assert int(size) * 1024 * 1024 >= largest_request
    ask = site.split("location = /api/ask {", 1)[1].split("}", 1)[0]
    for directive in ("proxy_buffering off;", "proxy_cache off;", "proxy_read_timeout 300s;"):
        assert directive in ask
    assert "proxy_pass http://assistant_app;" in ask
    # A location with its own proxy_set_header would drop the server's X-Forwarded-* ones,
    # and the app would take proxied requests for local ones (web/metrics.py).
    assert "proxy_set_header" not in ask
    assert "server 127.0.0.1:8000;" in site
    assert re.search(r"ssl_protocols TLSv1\.2 TLSv1\.3;", site)
    assert "Strict-Transport-Security" in site
    assert "return 301 https://$host$request_uri;" in site
    for header in ("X-Forwarded-For", "X-Forwarded-Proto"):
        assert f"proxy_set_header {header} " in site


# -- backup.sh and restore.sh ---------------------------------------------------------------
def _clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any ASSISTANT_* variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    return env | variables


def _sqlite_tables(path: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _fake_services(data_dir: Path, database_url: str | None = None) -> Services:
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    return build_services(settings, embedder=HashingEmbedder(), generator=ExtractiveFakeGenerator())


def _populate(services: Services) -> str:
    """One ingested Markdown document and a signed audit checkpoint; returns the chunk id."""
    document = services.upload(None, "harbour.md", HANDBOOK.encode())
    document = services.documents.ingest(document.id)
    assert document.status == "indexed", document.error
    services.audit(None, "test", {})
    services.audit_log.checkpoint()  # makes the signing key and the checkpoints file
    [chunk] = services.documents.chunks(document.id)
    return chunk.id


def _run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DEPLOY / script), *args], env=env, capture_output=True, text=True, timeout=300
    )


def _backup(env: dict[str, str], destination: Path, *options: str) -> Path:
    destination.mkdir(exist_ok=True)
    done = _run("backup.sh", *options, str(destination), env=env)
    assert done.returncode == 0, done.stderr
    archive = Path(done.stdout.strip())
    assert archive.parent == destination
    assert re.fullmatch(r"assistant-backup-\d{8}T\d{6}Z\.tar\.gz", archive.name)
    return archive


def _assert_answers(data_dir: Path, chunk_id: str, database_url: str | None = None) -> None:
    """The restored copy lists the document, finds its chunk, and its audit log verifies."""
    services = _fake_services(data_dir, database_url)
    assert [d.filename for d in services.documents.list()] == ["harbour.md"]
    assert [p.chunk_id for p in services.retriever.search(QUESTION, 3)] == [chunk_id]
    assert services.store.count() == 1 and services.keywords.count() == 1
    env = _clean_environment(ASSISTANT_DATA_DIR=str(data_dir))
    if database_url:
        env["ASSISTANT_DATABASE_URL"] = database_url
    verify = subprocess.run(
        [str(ASSISTANT_CLI), "audit", "verify"], env=env, capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "signed checkpoint" in verify.stdout


@pytest.mark.slow
@pytest.mark.sqlite("backs up the SQLite database file")
def test_backup_and_restore_a_sqlite_data_dir(tmp_path: Path) -> None:
    source = tmp_path / "source"
    chunk_id = _populate(_fake_services(source))
    archive = _backup(_clean_environment(ASSISTANT_DATA_DIR=str(source)), tmp_path / "backups")
    with tarfile.open(archive) as tar:
        names = {Path(*Path(name).parts[1:]).as_posix() for name in tar.getnames()}
    assert {"MANIFEST.sha256", "database.sqlite3", "keywords.sqlite3"} <= names
    audit = {"audit/signing-key.pem", "audit/checkpoints.jsonl", "audit/head.json"}
    assert {"chroma/chroma.sqlite3", *audit} <= names
    assert any(name.startswith("originals/") for name in names - {"originals"})

    restored = tmp_path / "restored"
    env = _clean_environment(ASSISTANT_DATA_DIR=str(restored))
    done = _run("restore.sh", str(archive), env=env)
    assert done.returncode == 0, done.stderr
    _assert_answers(restored, chunk_id)

    # A data directory that is not empty is replaced only with --force.
    refused = _run("restore.sh", str(archive), env=env)
    assert refused.returncode != 0
    assert "use --force" in refused.stderr
    forced = _run("restore.sh", "--force", str(archive), env=env)
    assert forced.returncode == 0, forced.stderr
    _assert_answers(restored, chunk_id)


@pytest.mark.slow
@pytest.mark.sqlite("backs up the SQLite database file")
def test_restore_refuses_an_archive_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _populate(_fake_services(source))
    archive = _backup(_clean_environment(ASSISTANT_DATA_DIR=str(source)), tmp_path / "backups")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    [folder] = unpacked.iterdir()
    [original] = (folder / "originals").iterdir()
    original.write_bytes(b"# Harbour rules\n\nThe harbour master is somebody else.\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)

    restored = tmp_path / "restored"
    done = _run(
        "restore.sh", str(archive), env=_clean_environment(ASSISTANT_DATA_DIR=str(restored))
    )
    assert done.returncode != 0
    assert "does not match its manifest" in done.stderr
    assert not restored.exists()


@pytest.mark.slow
def test_backup_and_restore_with_postgresql(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "source"
    services = _fake_services(source, postgres_url)
    chunk_id = _populate(services)
    env = _clean_environment(ASSISTANT_DATA_DIR=str(source), ASSISTANT_DATABASE_URL=postgres_url)
    archive = _backup(env, tmp_path / "backups", "--no-key")
    with tarfile.open(archive) as tar:
        names = {Path(name).name for name in tar.getnames()}
    assert "database.pgdump" in names and "signing-key.pem" not in names
    # Lose the document after the backup; the restore brings it back.
    services.documents.delete(services.documents.list()[0].id)
    services.sessions.kw["bind"].dispose()

    restored = tmp_path / "restored"
    env = _clean_environment(ASSISTANT_DATA_DIR=str(restored), ASSISTANT_DATABASE_URL=postgres_url)
    refused = _run("restore.sh", str(archive), env=env)
    assert refused.returncode != 0
    assert "use --force" in refused.stderr
    done = _run("restore.sh", "--force", str(archive), env=env)
    assert done.returncode == 0, done.stderr
    assert "has no signing key" in done.stderr
    # --no-key: the key is put back from where it is kept separately.
    shutil.copy(source / "audit" / "signing-key.pem", restored / "audit" / "signing-key.pem")
    _assert_answers(restored, chunk_id, postgres_url)


def test_the_scripts_are_valid_shell() -> None:
    scripts = [str(DEPLOY / "backup.sh"), str(DEPLOY / "restore.sh")]
    for script in scripts:
        subprocess.run(["sh", "-n", script], check=True)
        assert os.access(script, os.X_OK), f"{script} is not executable"
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", *scripts], check=True)
