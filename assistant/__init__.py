"""The core library of the on-premises document assistant (no web or queue code here)."""

import os

# Offline by default: no model hub or telemetry call is ever attempted.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# ONNX Runtime (1.29 and later) reports usage from Linux too, from native code: it looked up
# mobile.events.data.microsoft.com during a question (tests/test_offline_flow.py).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
