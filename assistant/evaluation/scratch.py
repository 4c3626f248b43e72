"""Running the product for an evaluation: services on a fresh temporary data directory, the
set's documents ingested through the real pipeline, and the settings that shaped the run."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from assistant.services import Services, build_services
from assistant.settings import Settings

logger = logging.getLogger(__name__)

ServicesFactory = Callable[[Settings], Services]


def _scratch_settings(settings: Settings, data_dir: Path) -> Settings:
    """The same settings on a new data directory, with its own SQLite database."""
    scratch = settings.model_copy(update={"data_dir": data_dir, "database_url": None})
    scratch.__dict__.pop("resolved_data_dir", None)  # a cached_property copied from settings
    return scratch


@contextmanager
def scratch_services(settings: Settings, factory: ServicesFactory | None) -> Iterator[Services]:
    """Services on a temporary data directory, removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="assistant-eval-"))
    try:
        logger.info("evaluating in the scratch data directory %s", directory)
        yield (factory or build_services)(_scratch_settings(settings, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def warm_up(services: Services, generator: bool = False) -> float:
    """Load the models before anything is timed; returns the seconds it took."""
    started = time.perf_counter()
    services.embedder.embed(["warm-up"])
    load = getattr(services.generator, "load", None)
    if generator and callable(load):
        load()
    return time.perf_counter() - started


def ingest(
    services: Services, uploads: Sequence[tuple[str, str, bytes]]
) -> tuple[dict[str, str], float]:
    """Upload and ingest (key, filename, bytes) items; returns document id -> key, for the
    documents indexed, and the seconds it took."""
    started = time.perf_counter()
    keys: dict[str, str] = {}
    for number, (key, filename, data) in enumerate(uploads, start=1):
        document = services.documents.ingest(services.documents.add(filename, data).id)
        if document.status != "indexed":
            logger.warning("%s was not indexed: %s", filename, document.error)
            continue
        keys[document.id] = key
        if number % 200 == 0:
            logger.info("ingested %s of %s documents", number, len(uploads))
    seconds = time.perf_counter() - started
    logger.info("indexed %s documents in %.1f s", len(keys), seconds)
    return keys, seconds


def settings_summary(services: Services) -> dict[str, Any]:
    """The settings that shape the figures, flattened (non-finite floats as text for JSON)."""
    summary: dict[str, Any] = {"embedder": services.embedder.name}
    for section in ("retrieval", "grounding", "chunking"):
        values = getattr(services.settings, section, None)
        for key, value in (values.model_dump() if values is not None else {}).items():
            finite = not isinstance(value, float) or math.isfinite(value)
            summary[f"{section}.{key}"] = value if finite else str(value)
    return summary
