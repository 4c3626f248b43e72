"""Chroma server mode (ASSISTANT_CHROMA_URL): a real `chroma run` server, the machine's Redis,
two real Celery workers and the test process sharing one data directory (the SQLite
database, the originals and the keyword index) while the vectors live on the server.
Then the server is stopped mid-way: clear errors, and nothing is lost once it is back."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
import redis
from chromadb.config import Settings as ChromaSettings

from assistant.services import Services, build_services
from assistant.settings import Settings, load_settings
from assistant.vectorstore import COLLECTION, VectorStoreUnavailable
from tests.conftest import ADMIN_PASSWORD, stop_process, wait_until
from tests.documents import sample_files
from web import create_app
from web.tasks import TaskSender

pytestmark = pytest.mark.slow

CHROMA = Path(sys.executable).parent / "chroma"
SITES = [
    ("Alder Ridge", "Tomasz Wielgus", "January"),
    ("Brackwater", "Noor Haddad", "February"),
    ("Cinder Fell", "Lucia Marchetti", "March"),
    ("Dunlin Moss", "Kwame Mensah", "April"),
    ("Elver Bay", "Saoirse Byrne", "May"),
    ("Fallow Heath", "Arvid Lindqvist", "June"),
    ("Gannet Rock", "Priya Raman", "July"),
    ("Hollin Clough", "Mateo Alvarez", "August"),
    ("Ivel Marsh", "Yuki Tanaka", "September"),
    ("Juniper Scar", "Olu Adeyemi", "October"),
    ("Kestrel Moor", "Hanna Virtanen", "November"),
    ("Larch Hollow", "Diego Ferraz", "December"),
    ("Merrow Sands", "Fatima Zahra", "January"),
    ("Nettle Combe", "Bram de Vries", "February"),
    ("Osprey Point", "Leila Karimi", "March"),
    ("Pike Tarn", "Jonas Berg", "April"),
]


def station(site: str, keeper: str, month: str) -> bytes:
    return (
        f"# {site} weather station\n\nThe {site} weather station is run by {keeper}.\n\n"
        f"Its rain gauges are calibrated every {month} by the regional survey office.\n"
    ).encode()


class ChromaServer:
    """`chroma run` on a free loopback port, persisting to `path`; restartable."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path, self.log = path, log
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(CHROMA), "run", "--path", str(self.path), "--host", "127.0.0.1"]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "ANONYMIZED_TELEMETRY": "FALSE"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"chroma run exited:\n{self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"no Chroma heartbeat after 60 s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def chunk_ids(self) -> set[str]:
        """What the server holds, read through a client of its own."""
        client = chromadb.HttpClient(
            "127.0.0.1", self.port, settings=ChromaSettings(anonymized_telemetry=False)
        )
        try:
            return set(client.get_collection(COLLECTION).get(include=[])["ids"])
        finally:
            client.close()


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "chroma-server", tmp_path / "chroma-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_settings(
    tmp_path: Path,
    model_cache: Path,
    redis_url: str,
    chroma_server: ChromaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings for the test process; the workers get the same through the environment."""
    redis.Redis.from_url(redis_url).flushdb()
    monkeypatch.setenv("ASSISTANT_CHROMA_URL", chroma_server.url)
    # One document per task, so that both workers get some (workers may group documents).
    monkeypatch.setenv("ASSISTANT_INGEST_GROUP_DOCUMENTS", "1")
    return load_settings(
        data_dir=tmp_path / "var",
        broker_url=redis_url,
        model_cache_dir=model_cache,
        admin_password=ADMIN_PASSWORD,
    )


def upload(services: Services, sender: TaskSender, files: dict[str, bytes]) -> dict[str, str]:
    ids = {}
    for name, data in files.items():
        ids[name] = services.upload(None, name, data).id
        sender.send_ingest(ids[name])
    return ids


def status(services: Services, document_id: str) -> str:
    return services.documents.get(document_id).status


def expected_chunks(services: Services) -> set[str]:
    documents = services.documents
    return {chunk.id for d in documents.list() for chunk in documents.chunks(d.id)}


def test_two_workers_index_into_a_chroma_server(
    server_settings: Settings,
    chroma_server: ChromaServer,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    assert server_settings.chroma_url == chroma_server.url
    start_worker(server_settings)
    start_worker(server_settings)
    services = build_services(server_settings)
    files = sample_files() | {f"{s[0].lower().replace(' ', '-')}.md": station(*s) for s in SITES}
    assert len(files) == 20
    ids = upload(services, TaskSender(server_settings), files)

    def all_indexed() -> bool:
        states = {status(services, i) for i in ids.values()}
        assert "failed" not in states, [(d.filename, d.error) for d in services.documents.list()]
        return states == {"indexed"}

    wait_until(all_indexed, 300, "two workers to index 20 documents")
    # Both workers took documents.
    for number in (0, 1):
        log = (tmp_path / f"worker-{number}.log").read_text(errors="replace")
        assert "succeeded" in log, f"worker {number} indexed nothing:\n{log}"
    # The vectors are on the server, exactly the database's chunks; none in the data dir.
    chunks = expected_chunks(services)
    assert len(chunks) >= 20
    assert chroma_server.chunk_ids() == chunks == services.store.ids()
    assert not (server_settings.chroma_dir / "chroma.sqlite3").exists()
    # The keyword index the workers wrote is the shared data directory's file.
    assert services.keywords.ids() == chunks

    answer = services.answerer.ask("Who chairs the compliance review?", collections=["default"])
    assert not answer.declined, answer
    assert answer.citations[0].passage.document_id == ids["compliance.md"]
    assert "Amara Okafor" in answer.citations[0].passage.text
    answer = services.answerer.ask("Who runs the Gannet Rock weather station?")
    assert answer.citations, answer
    assert answer.citations[0].passage.document_id == ids["gannet-rock.md"]
    assert services.retriever.search("Gannet Rock weather station", 3, ["elsewhere"]) == []

    gone = ids["gannet-rock.md"]
    gone_chunks = {c.id for c in services.documents.chunks(gone)}
    services.documents.delete(gone)
    assert chroma_server.chunk_ids() == chunks - gone_chunks
    report = services.index.verify()
    assert report.consistent, report.to_dict()
    assert report.expected_chunks == len(chunks - gone_chunks)


def test_a_chroma_outage_gives_clear_errors_and_loses_nothing(
    server_settings: Settings,
    chroma_server: ChromaServer,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASSISTANT_CHROMA_WAIT_SECONDS", "20")
    worker_log = tmp_path / "worker-0.log"
    start_worker(server_settings)
    services = build_services(server_settings)
    sender = TaskSender(server_settings)
    files = sample_files()
    [first] = upload(services, sender, {"compliance.md": files["compliance.md"]}).values()
    wait_until(lambda: status(services, first) == "indexed", 240, "the first document")

    chroma_server.stop()
    # Readiness names the vector store; the library and the CLI say what is wrong.
    client = create_app(settings=server_settings, services=services).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["vector_store"].startswith("error"), ready.json
    assert ready.json["database"] == "ok"
    with pytest.raises(VectorStoreUnavailable, match="does not answer"):
        services.answerer.ask("Who chairs the compliance review?")
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "assistant"), "reindex", "--verify"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_cli_environment(server_settings),
    )
    assert cli.returncode == 1, cli
    assert f"the Chroma server at {chroma_server.url} does not answer" in cli.stderr
    assert "Traceback" not in cli.stderr

    # A short outage (a restart): the worker waits, and the document is indexed.
    [second] = upload(services, sender, {"parking.html": files["parking.html"]}).values()
    wait_until(
        lambda: "does not answer" in worker_log.read_text(errors="replace"),
        120,
        "the worker to find the server down",
    )
    chroma_server.start()
    wait_until(lambda: status(services, second) == "indexed", 120, "indexing after a restart")

    # A long outage: the document fails with a clear reason, and a retry indexes it.
    chroma_server.stop()
    [third] = upload(services, sender, {"canteen.docx": files["canteen.docx"]}).values()
    wait_until(lambda: status(services, third) == "failed", 180, "the outage to fail it")
    assert "Chroma server" in (services.documents.get(third).error or "")
    chroma_server.start()
    services.documents.requeue(third)
    sender.send_ingest(third)
    wait_until(lambda: status(services, third) == "indexed", 120, "the retried document")

    assert chroma_server.chunk_ids() == expected_chunks(services)
    assert services.index.verify().consistent


def _cli_environment(settings: Settings) -> dict[str, Any]:
    return {
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir),
        "ASSISTANT_BROKER_URL": str(settings.broker_url),
        "ASSISTANT_CHROMA_URL": str(settings.chroma_url),
        "ASSISTANT_MODEL_CACHE_DIR": str(settings.model_cache_dir),
    }
