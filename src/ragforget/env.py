"""Process-wide environment defaults, applied before any Hugging Face or MLflow import.

The Hugging Face libraries read their offline switches at import time, so the entry point and the
test suite call :func:`apply_defaults` first. Values the user already set are kept: a user with Hub
access runs ``HF_HUB_OFFLINE=0 python run.py model=hf ...``.
"""

from __future__ import annotations

import os

DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def apply_defaults() -> None:
    """Set offline/telemetry defaults without overriding what the user exported."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
