"""The core stays free of the adapters: no flask or celery in assistant/, no worker in web/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_core_never_imports_flask_or_celery() -> None:
    offenders = {
        path: sorted(names & {"flask", "celery", "kombu", "werkzeug", "web"})
        for path, names in imported_modules("assistant").items()
        if names & {"flask", "celery", "kombu", "werkzeug", "web"}
    }
    assert offenders == {}


def test_importing_the_whole_core_loads_no_adapter() -> None:
    script = (
        "import importlib, pkgutil, sys, assistant\n"
        "for m in pkgutil.walk_packages(assistant.__path__, 'assistant.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in ('flask', 'celery', 'web', 'worker') if n in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_web_never_imports_worker() -> None:
    offenders = [path for path, names in imported_modules("web").items() if "worker" in names]
    assert offenders == []
