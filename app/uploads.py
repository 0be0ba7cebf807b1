"""The Characterize page's upload, kept for the session: copied to a private temporary file and
validated (hashed) once per file, not on every rerun, so a 1 GB LoRA is not re-hashed and
re-copied each time a widget changes.

Kept in ``st.session_state`` under the uploaded file's id and size; a new file (or none)
replaces the copy and removes the old one. Changing the backend re-validates the same copy
(the limits differ) without copying it again. Enqueueing hands the copy to
:func:`carlos.characterize.jobs.submit`, which checks the user and validates it once more
before it stores anything.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from carlos.characterize import jobs
from carlos.files.validate import LoRAFileReport

_STATE = "_char_upload"
COPY_CHUNK = 16 << 20  # bytes per read while copying the upload to disk


@dataclass(frozen=True)
class ValidatedUpload:
    """One uploaded file as this session holds it."""

    file_id: str  # Streamlit's id of the uploaded file (a new upload gets a new one)
    size: int
    backend: str  # the validation below is for this backend's limits
    path: Path  # the session's private copy
    name: str  # the uploader's file name: untrusted text
    sha256: str | None
    report: LoRAFileReport


def save_upload(upload: Any, folder: Path) -> Path:
    """Stream the uploaded bytes to ``folder`` under a fixed name (never the uploader's)."""
    path = folder / "upload.safetensors"
    upload.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload, out, COPY_CHUNK)
    return path


def validated_upload(upload: Any, backend: str) -> ValidatedUpload:
    """The session's copy and validation report of ``upload``: made on a new file only."""
    kept: ValidatedUpload | None = st.session_state.get(_STATE)
    same_file = kept is not None and (kept.file_id, kept.size) == (upload.file_id, upload.size)
    if kept is not None and same_file and kept.backend == backend:
        return kept
    if kept is not None and same_file:
        path = kept.path  # same bytes, other limits: validate again, copy nothing
    else:
        discard_upload()
        path = save_upload(upload, Path(tempfile.mkdtemp(prefix="carlos-upload-")))
    report = jobs.inspect_upload(path, upload.name, backend)
    kept = ValidatedUpload(upload.file_id, upload.size, backend, path, upload.name, report.sha256, report)
    st.session_state[_STATE] = kept
    return kept


def discard_upload() -> None:
    """Forget the session's upload and remove its copy (the uploader was cleared)."""
    kept: ValidatedUpload | None = st.session_state.pop(_STATE, None)
    if kept is not None:
        shutil.rmtree(kept.path.parent, ignore_errors=True)
