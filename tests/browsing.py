"""What the browser tests share: gunicorn serving `web:create_app()` on a test's data
directory, Debian's chromium driven by Playwright, screenshots and the sign-in form."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from assistant.settings import Settings
from tests.conftest import ADMIN_PASSWORD, stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parent.parent
# Set to a directory to save the screenshots in docs/screenshots/ (see its README).
SCREENSHOTS = os.environ.get("ASSISTANT_SCREENSHOTS_DIR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@contextmanager
def serving(
    settings: Settings, tmp_path: Path, extra: dict[str, str] | None = None
) -> Iterator[str]:
    """gunicorn serving the app factory on a free port, on the test's data directory."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "ASSISTANT_DATA_DIR": str(settings.resolved_data_dir),
        "ASSISTANT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "ASSISTANT_MODEL_CACHE_DIR": str(settings.models_dir),
        **(extra or {}),
    }
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-k", "gthread", "--threads", "4", "-b", f"127.0.0.1:{port}",
        "--timeout", "300", "--no-control-socket", "web:create_app()",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited early:\n{log.read_text(errors='replace')}")
            try:
                if get_json(f"{url}/healthz")["status"] == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not ready:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield url
    finally:
        stop_process(process)
        print(log.read_text(errors="replace"))  # shown by pytest when the test fails


@contextmanager
def chromium(back_forward_cache: bool = False) -> Iterator[Any]:
    """Debian's chromium. Playwright turns its back/forward cache off unless asked to keep
    it, as a user's browser has it (Back then shows the page as it was left)."""
    if not CHROMIUM.exists():
        pytest.skip(f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    kept = ["--disable-back-forward-cache"] if back_forward_cache else None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, ignore_default_args=kept
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    """Save what the user sees now as SCREENSHOTS/name.png; a no-op unless asked for."""
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS).resolve() / f"{name}.png"))


def normalise(text: str) -> str:
    return " ".join(text.split())


def signed_in_page(browser: Any, server: str, username: str, password: str, shot: str = "") -> Any:
    """A page in its own browser context (its own cookies), signed in through the form."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{server}/documents")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#username", username)
    page.fill("#password", password)
    if shot:
        screenshot(page, shot)
    page.click("form.stacked button[type=submit]")
    page.wait_for_url(re.compile(r"/documents$"))
    return page
