"""The in-process characterization worker: queued jobs run even when no ``python -m carlos worker`` is started."""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from app.resources import blob_store, open_store
from carlos.config import default_paths


@st.cache_resource(show_spinner=False)
def _background_worker(path: str) -> Any:
    """A worker thread inside the dashboard process (one per store): queued jobs run even
    when no ``python -m carlos worker`` is started. It shares the store's file lock, so an
    external worker can run beside it; whichever claims a job first does it."""
    import threading

    from carlos.characterize.jobs import Worker

    worker = Worker(open_store(path), worker_id=f"dashboard:{os.getpid()}", blobs=blob_store())
    thread = threading.Thread(target=worker.run, kwargs={"poll_s": 1.0}, daemon=True, name="carlos-dashboard-worker")
    thread.start()
    return thread


def ensure_background_worker() -> None:
    _background_worker(default_paths().store)
