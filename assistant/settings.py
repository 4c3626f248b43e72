"""One typed Settings object, read from ASSISTANT_* environment variables (nested with __)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from assistant.errors import ConfigurationError

PackagedModel = Literal["qwen2.5-0.5b", "qwen2.5-1.5b", "gemma3-270m", "smollm2-135m"]
# How MiniLM runs (assistant/embedding.py); measured in docs/benchmarks.md, "Issue 6".
EmbeddingBackend = Literal["torch", "onnx", "onnx-int8"]


TASK_TIME_LIMIT = 1800  # seconds one ingestion task may take before the worker kills it


class GeneratorSettings(BaseModel):
    # A packaged GGUF (assistant/answering/models.py), chosen by measurement on squad2-dev
    # and cuad-dev (docs/benchmarks.md, "Issue 12").
    model: PackagedModel = "qwen2.5-0.5b"
    # Any GGUF file; overrides `model`, so a site can drop in a bigger instruct model. It is
    # the site's own file: no hash is pinned for it.
    model_path: Path | None = None
    # "chat" uses the chat template stored in the GGUF; "completion" a few-shot plain prompt
    # (for base models). "auto" picks chat for instruction-tuned models.
    prompt_style: Literal["auto", "chat", "completion"] = "auto"
    n_ctx: int = Field(2048, ge=512)
    n_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_tokens: int = Field(160, ge=1, le=2048)
    # llama.cpp's flash attention: faster prompt processing on this CPU (docs/benchmarks.md).
    flash_attn: bool = True


class LargeModelSettings(GeneratorSettings):
    """The larger model of routing: the packaged Qwen2.5-Coder-1.5B unless set."""

    model: PackagedModel = "qwen2.5-1.5b"


class RoutingSettings(BaseModel):
    """The larger local model: "auto" hands it the questions whose small-model answer is not
    confident (answering.route_threshold); "always" answers every question with it; "off"
    never loads it."""

    mode: Literal["off", "auto", "always"] = "auto"
    large: LargeModelSettings = LargeModelSettings()


class RetrievalSettings(BaseModel):
    top_k: int = Field(3, ge=1, le=50)
    # Passages less similar than this (cosine) never reach the model; none left: "not found".
    min_score: float = Field(0.2, ge=-1.0, le=1.0)
    # Hybrid search: this many candidates from each of dense and keyword search, fused by
    # weighted reciprocal rank (dense weight 1). Chosen on scifact-dev, see docs/benchmarks.md.
    candidates: int = Field(30, ge=1, le=500)
    rrf_k: float = Field(60.0, gt=0)
    keyword_weight: float = Field(1.0, ge=0.0)  # 0 turns keyword search off


class Calibration(BaseModel):
    """Logistic weights over the answer's signals (assistant/answering/calibration.py)."""

    intercept: float = 0.0
    weights: dict[str, float] = Field(default_factory=dict)


# Fitted with `assistant eval calibrate` on squad2-dev and cuad-dev, 100 questions of each
# (--seed 1), every question answered by both models (docs/benchmarks.md, "Issue 12"): the
# intercept and the weight of each signal, per route. Weights are on the raw signals.
CALIBRATION: dict[str, dict[str, Any]] = {
    "small": {
        "intercept": -1.2716,
        "weights": {
            "similarity": -0.9716,
            "evidence": -0.6428,
            "coverage": 2.777,
            "support": -0.668,
            "decline_logprob": -0.1275,
            "mean_logprob": 0.8629,
            "min_logprob": 0.2648,
            "answer_words": 0.2014,
        },
    },
    "large": {
        "intercept": -17.2396,
        "weights": {
            "similarity": -1.7633,
            "evidence": 0.3778,
            "coverage": 1.5754,
            "support": 13.2618,
            "decline_logprob": -0.2826,
            "mean_logprob": 0.4799,
            "min_logprob": 0.7591,
            "judge": 2.0771,
            "answer_words": -0.1118,
        },
    },
}


def _default_calibration() -> dict[str, Calibration]:
    return {route: Calibration(**values) for route, values in CALIBRATION.items()}


class AnsweringSettings(BaseModel):
    """Evidence, verification and the "not found" decision (assistant/answering/). Chosen by
    measurement: docs/benchmarks.md, "Issue 12"."""

    # The best sentences of the top passages (MiniLM cosine of the sentence with its
    # passage's title and section, plus keyword_weight times the share of the question's
    # content words it holds), each with `evidence_window` neighbours, at most
    # `evidence_chars` characters in all. 0 sentences: the whole top passages.
    evidence_sentences: int = Field(4, ge=0, le=20)
    evidence_window: int = Field(1, ge=0, le=5)
    evidence_chars: int = Field(1400, ge=100, le=20_000)
    keyword_weight: float = Field(0.5, ge=0.0)
    max_answer_tokens: int = Field(120, ge=1, le=1024)
    # A sentence is shown only if this share of its new words (not in the question) is in
    # the source sentence it cites.
    min_support: float = Field(0.75, ge=0.0, le=1.0)
    # Calibrated probability that the answer is right: below answer_threshold it is declined;
    # below route_threshold (routing "auto") the larger model answers instead.
    answer_threshold: float = Field(0.25, ge=0.0, le=1.0)
    route_threshold: float = Field(0.5, ge=0.0, le=1.0)
    # Ask the larger model whether its answer is in the sources (a calibrator input).
    judge: bool = True
    calibration: dict[str, Calibration] = Field(default_factory=_default_calibration)
    # "verified": each verified sentence is sent as soon as the record of the question and
    # its passages has committed; "strict": nothing is sent before the answer's own record.
    stream: Literal["verified", "strict"] = "verified"

    @model_validator(mode="after")
    def _routes_calibrated(self) -> AnsweringSettings:
        missing = {"small", "large"} - set(self.calibration)
        if missing:
            raise ValueError(f"calibration needs the routes small and large; missing {missing}")
        return self


class ChunkingSettings(BaseModel):
    # Characters per chunk; about 256 MiniLM tokens of English prose.
    size: int = Field(1000, ge=100)
    overlap: int = Field(150, ge=0)
    # Index each chunk with its document's title and section heading (contextual headers),
    # so a passage deep in a document still matches a question that names the document.
    headers: bool = True

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.overlap >= self.size:
            raise ValueError("chunking overlap must be smaller than chunking size")
        return self


class LimitSettings(BaseModel):
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1)
    # The largest request body of every route but uploads (sign-in, questions, forms);
    # larger ones get HTTP 413 before they are read. Uploads by admins may carry 20 files.
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    # Pages of a PDF, slides of a PPTX, sheets of an XLSX.
    max_pdf_pages: int = Field(2000, ge=1)
    max_question_chars: int = Field(1000, ge=10)
    # ZIP-based files (DOCX, XLSX, PPTX, ODT, ZIP), checked from the central directory
    # before anything is decompressed: total unpacked size, number of entries, and the
    # compression ratio of any entry of 1 MiB or more (real documents stay well below 100:1;
    # a ZIP bomb reaches about 1000:1).
    max_unpacked_bytes: int = Field(256 * 1024 * 1024, ge=1)
    max_zip_entries: int = Field(10_000, ge=1)
    max_compression_ratio: float = Field(200.0, ge=1.0)
    # Scanned PDF pages OCR'd per document (about 2 to 5 s each); the rest get a warning.
    max_ocr_pages: int = Field(200, ge=0)
    # The child process that parses one file is stopped past any of these.
    parse_seconds: float = Field(600.0, gt=0)  # wall clock
    parse_cpu_seconds: int = Field(600, ge=1)
    parse_memory_bytes: int = Field(1024 * 1024 * 1024, ge=64 * 1024 * 1024)  # address space
    # A document whose processing killed the worker this many times is failed, not retried.
    max_attempts: int = Field(3, ge=1)


class AuditSettings(BaseModel):
    # A signed checkpoint is made every this many records or minutes, whichever comes first.
    checkpoint_every: int = Field(100, ge=1)
    checkpoint_minutes: float = Field(10.0, gt=0)
    # The Ed25519 signing key is kept outside the database. Default: <data_dir>/audit/.
    # Put it on another volume (or mount it read-only) in production.
    signing_key_path: Path | None = None
    # Signed checkpoints are also appended here, for shipping off the box.
    checkpoint_file: Path | None = None
    # The newest record's signed head, rewritten after every record (outside the database,
    # so records deleted from the end are detected). Default: <data_dir>/audit/head.json.
    head_file: Path | None = None


class AccountSettings(BaseModel):
    # Failed sign-ins allowed per account from one address within the window (the next
    # gets HTTP 429; the same account from another address is not affected), and from one
    # address over all accounts (password spraying).
    max_failed_logins: int = Field(5, ge=1)
    max_failed_logins_per_client: int = Field(20, ge=1)
    failed_login_window_seconds: int = Field(60, ge=1)
    # A session ends this long after sign-in, however active (and at sign-out, or when its
    # user's password, role or enabled state changes).
    session_hours: float = Field(12.0, gt=0)
    # Cookies carry the Secure flag; turn off only for plain-HTTP development or tests.
    secure_cookies: bool = True


class LoadSettings(BaseModel):
    """Backpressure on questions (web/limits.py). Both limits hold per web process."""

    # Answers prepared at once; the model answers one question at a time.
    max_concurrent_answers: int = Field(1, ge=1)
    # Questions that may wait for a free slot; one more is refused at once with HTTP 503.
    max_waiting_answers: int = Field(4, ge=0)
    # How long a waiting question may wait for a slot before it is refused with HTTP 503.
    wait_seconds: float = Field(30.0, gt=0)
    # Questions one user may ask per minute (a sliding window); the next one gets HTTP 429.
    per_user_per_minute: int = Field(20, ge=1)
    # The Retry-After a question refused for lack of capacity is given.
    retry_after_seconds: int = Field(5, ge=1)


class ConversationSettings(BaseModel):
    # Conversations untouched this many days are deleted by the worker's periodic job (and
    # by `assistant conversations purge`), each run audited; 0 keeps them.
    retention_days: int = Field(90, ge=0)
    # How often the worker runs that job.
    purge_interval_hours: float = Field(6.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("var")
    # Default: SQLite inside data_dir. A postgresql:// URL works too.
    database_url: str | None = None
    # Default: kombu's filesystem transport inside data_dir (no server). Production: redis://.
    broker_url: str | None = None
    # Default: the embedded Chroma inside data_dir. A Chroma server: http://host:8000.
    chroma_url: str | None = None
    # How long a write to the Chroma server is retried while it does not answer (a
    # restart) before the document fails with a clear reason; reads never wait.
    chroma_wait_seconds: float = Field(60.0, ge=0)
    # How long a statement waits for a database lock (SQLite's busy timeout, PostgreSQL's
    # lock_timeout) before it fails; the web then answers 503 at once instead of hanging.
    database_busy_seconds: float = Field(5.0, gt=0, le=300)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Reverse proxies in front of the web server (nginx: 1). Their X-Forwarded-For and
    # X-Forwarded-Proto are then trusted, so audit records show the real client address.
    trusted_proxies: int = Field(0, ge=0, le=5)
    # Where the assembled GGUF and the exported embedding models are kept (made once, then
    # reused). Default: <data_dir>/models. Several data directories may share one.
    model_cache_dir: Path | None = None
    embedding_model_path: Path | None = None
    # 16: as fast as 32 through the worker, with 37% less peak memory (ONNX Runtime's arena
    # keeps the largest batch's buffers; docs/benchmarks.md, "Issue 6").
    embedding_batch_size: int = Field(16, ge=1)
    # A worker that takes a queued document also takes up to this many more queued
    # documents, up to this many bytes of originals in all, and embeds and indexes them
    # together: short documents then cost one embedding call and one commit per step, not
    # one each (docs/benchmarks.md, "Issue 6"). 1 processes documents one by one.
    ingest_group_documents: int = Field(32, ge=1)
    ingest_group_bytes: int = Field(4 * 1024 * 1024, ge=1)
    # int8 ONNX Runtime: indexed scifact-dev 1.33 times faster than torch with the same
    # nDCG@10 (docs/benchmarks.md, "Issue 6"). Vectors of different backends are never
    # mixed in one index: the embedder's name records the backend.
    embedding_backend: EmbeddingBackend = "onnx-int8"
    # Threads of the ONNX Runtime backends (torch keeps its own default).
    embedding_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    generator: GeneratorSettings = GeneratorSettings()
    routing: RoutingSettings = RoutingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    answering: AnsweringSettings = AnsweringSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    limits: LimitSettings = LimitSettings()
    audit: AuditSettings = AuditSettings()
    accounts: AccountSettings = AccountSettings()
    load: LoadSettings = LoadSettings()
    conversations: ConversationSettings = ConversationSettings()
    # The first admin's password (ASSISTANT_ADMIN_PASSWORD). Unset: one is generated and
    # printed once, on first start only.
    admin_password: SecretStr | None = None

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Plain postgresql:// means the psycopg 3 driver we install.
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{self.resolved_data_dir / 'assistant.db'}"

    @property
    def keyword_index_path(self) -> Path:
        return self.resolved_data_dir / "keywords.sqlite3"

    @property
    def chroma_dir(self) -> Path:
        return self.resolved_data_dir / "chroma"

    @property
    def originals_dir(self) -> Path:
        return self.resolved_data_dir / "originals"

    @property
    def models_dir(self) -> Path:
        """The assembled GGUF and the exported embedding models (made once, then reused)."""
        return (self.model_cache_dir or self.resolved_data_dir / "models").expanduser()

    @property
    def audit_dir(self) -> Path:
        return self.resolved_data_dir / "audit"

    @property
    def signing_key_path(self) -> Path:
        return self.audit.signing_key_path or self.audit_dir / "signing-key.pem"

    @property
    def checkpoint_file(self) -> Path:
        return self.audit.checkpoint_file or self.audit_dir / "checkpoints.jsonl"

    @property
    def head_file(self) -> Path:
        return self.audit.head_file or self.audit_dir / "head.json"

    @property
    def log_dir(self) -> Path:
        """Where `assistant serve` sends the web server's and the worker's output."""
        return self.resolved_data_dir / "logs"

    @property
    def scratch_dir(self) -> Path:
        """Temporary files of parsing (OCR page images), inside the data directory."""
        return self.resolved_data_dir / "scratch"

    @property
    def broker_dir(self) -> Path:
        return self.resolved_data_dir / "broker"

    def celery_config(self) -> dict[str, object]:
        """Broker settings shared by the worker and every producer (plain data, no imports)."""
        config: dict[str, object] = {
            # A task is acknowledged only once it finished, and given back if its worker
            # dies; each worker process holds one message at a time.
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_soft_time_limit": TASK_TIME_LIMIT - 60,
            "task_time_limit": TASK_TIME_LIMIT,
            "task_ignore_result": True,
            "broker_connection_retry_on_startup": True,
        }
        if self.broker_url:
            config["broker_url"] = self.broker_url
            # Longer than the task time limit, so a slow task is never delivered twice.
            config["broker_transport_options"] = {"visibility_timeout": 2 * TASK_TIME_LIMIT}
        else:
            queue = str(self.broker_dir / "queue")
            config["broker_url"] = "filesystem://"
            config["broker_transport_options"] = {
                "data_folder_in": queue,
                "data_folder_out": queue,
                "processed_folder": str(self.broker_dir / "processed"),
                # kombu's default is "control" in the current directory.
                "control_folder": str(self.broker_dir / "control"),
                "store_processed": False,
                "polling_interval": 0.01,  # 0.8% of a core when idle (docs/benchmarks.md)
            }
            # The filesystem transport has no fanout exchange for remote control.
            config["worker_enable_remote_control"] = False
        return config

    def ensure_dirs(self) -> None:
        for path in (self.resolved_data_dir, self.originals_dir, self.chroma_dir):
            path.mkdir(parents=True, exist_ok=True)
        if not self.broker_url:
            (self.broker_dir / "queue").mkdir(parents=True, exist_ok=True)
            (self.broker_dir / "processed").mkdir(parents=True, exist_ok=True)
            (self.broker_dir / "control").mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; a bad value fails fast with a readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"ASSISTANT_{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
