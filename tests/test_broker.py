"""The worker's embedded broker takes a message file only once its producer has written it
(kombu's own transport parsed a file caught between create and write, and the worker died)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport.virtual import Empty

from assistant.settings import Settings
from worker import broker
from worker.app import _celery_config


def test_a_message_file_is_taken_only_once_written(settings: Settings) -> None:
    settings.ensure_dirs()
    options = settings.celery_config()["broker_transport_options"]
    assert isinstance(options, dict)
    queue, processed = Path(options["data_folder_in"]), Path(options["processed_folder"])
    with Connection(f"{broker.SCHEME}://", transport_options=options) as connection:
        channel = connection.default_channel
        message = queue / "1000_a.celery.msg"
        message.touch()  # a producer created it and has not written it yet
        with pytest.raises(Empty):
            channel._get("celery")
        assert message.exists()
        message.write_text(json.dumps({"body": "document 1"}))
        assert channel._get("celery") == {"body": "document 1"}
        with pytest.raises(Empty):
            channel._get("celery")
    assert list(queue.iterdir()) == list(processed.iterdir()) == []  # nothing left in /tmp


def test_only_the_embedded_broker_is_replaced(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(settings.resolved_data_dir))
    assert _celery_config()["broker_url"] == f"{broker.SCHEME}://"
    monkeypatch.setenv("ASSISTANT_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert _celery_config()["broker_url"] == "redis://127.0.0.1:6379/0"
