"""The embedded broker as the worker reads it: kombu's file-system transport, except that a
message file is taken only once its producer has written it.

kombu's producer creates the message file, then locks and writes it; its consumer renames
any file it lists and parses it at once. A file taken between the two is empty, the JSON
parse fails and the worker process exits (seen under load: uploads at 2 per second while
the worker polled every 10 ms). Here an empty file is left for the next poll, the claimed
file is read under a shared lock (which waits for a writer still holding its exclusive
one), and claimed files stay inside the data directory instead of the system's /tmp.
Producers (web, CLI) keep kombu's own transport: the files are the same."""

from __future__ import annotations

import fcntl
import os
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import loads

SCHEME = "assistant-files"


class Channel(filesystem.Channel):
    def _get(self, queue: str) -> Any:
        suffix = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != suffix:
                continue
            path = os.path.join(self.data_folder_in, name)
            claimed = os.path.join(self.processed_folder, name)
            try:
                if os.path.getsize(path) == 0:
                    continue  # created, not yet written: the next poll takes it
                os.rename(path, claimed)  # atomic: one consumer gets each message
            except OSError:
                continue  # another consumer took it first
            with open(claimed, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_SH)
                payload = file.read()
            if not self.store_processed:
                os.remove(claimed)
            return loads(payload.decode())
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = "worker.broker:Transport"
