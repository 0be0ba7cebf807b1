"""SQL for LoRA rows (``loras``) and the import log (``imports``): ``store.loras``.

Owns inserting LoRAs (existing ids are left untouched), looking one up by lora_id,
Civitai version id or sha256, the texts the textual baselines read, and the record
of which corpus files were imported. Inserting new LoRAs bumps ``data_version``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from carlos.errors import InvalidInputError, NotFoundError
from carlos.store.base import Database

LORA_COLUMNS = (
    "lora_id",
    "source",
    "version_id",
    "model_id",
    "name",
    "description",
    "nsfw_level",
    "folder_name",
    "download_count",
    "sha256",
    "file_path",
    "file_report",
    "trigger_words",
)


class LoraRepository:
    """LoRA rows and import records of one store (``store.loras``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- LoRAs -------------------------------------------------------------------------------
    def upsert(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert LoRAs, leaving existing ids untouched; returns how many were new."""
        if not rows:
            return 0
        cols = LORA_COLUMNS
        values = []
        for r in rows:
            if not r.get("lora_id"):
                raise InvalidInputError("every LoRA row needs a lora_id")
            unknown = set(r) - set(cols)
            if unknown:
                raise InvalidInputError(f"unknown LoRA fields {sorted(unknown)}")
            row = dict(r)
            if isinstance(row.get("file_report"), dict):
                row["file_report"] = json.dumps(row["file_report"])
            values.append([row.get(c) for c in cols])
        with self._db.transaction() as con:
            before = con.execute("SELECT count(*) FROM loras").fetchone()[0]
            con.executemany(
                f"INSERT INTO loras ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT (lora_id) DO NOTHING",
                values,
            )
            added = con.execute("SELECT count(*) FROM loras").fetchone()[0] - before
            if added:
                self._db.bump(con)
        return int(added)

    def get(self, key: str | int) -> dict[str, Any]:
        """A LoRA by lora_id, Civitai version id or sha256; raises NotFoundError."""
        lora_id = self.resolve(key)
        with self._db.session() as con:
            df = con.execute("SELECT * FROM loras WHERE lora_id = ?", [lora_id]).df()
        row: dict[str, Any] = df.iloc[0].to_dict()
        if row.get("file_report"):
            row["file_report"] = json.loads(row["file_report"])
        return row

    def resolve(self, key: str | int) -> str:
        """The lora_id of a lora_id, Civitai version id or sha256; raises NotFoundError."""
        text = str(key).strip()
        # the version id compared as a number, not the column cast to text: each condition can then use
        # its index (PostgreSQL scanned all loras for the cast: 70 ms a lookup at a million LoRAs)
        version = int(text) if text.isdigit() and len(text) < 19 and str(int(text)) == text else None
        with self._db.session() as con:
            found = con.execute(
                "SELECT lora_id FROM loras WHERE lora_id = ? OR sha256 = ? OR version_id = ? ORDER BY lora_id LIMIT 1",
                [text, text.lower(), version],
            ).fetchone()
        if not found:
            raise NotFoundError(f"no LoRA with id, version id or sha256 {text!r} in {self._db.where}")
        return str(found[0])

    def find_by_sha256(self, sha256: str) -> str | None:
        """The lora_id of the LoRA whose file has this sha256, or None."""
        with self._db.session() as con:
            row = con.execute("SELECT lora_id FROM loras WHERE sha256 = ?", [sha256]).fetchone()
        return row[0] if row else None

    def text_documents(self) -> Any:
        """lora_id, name, description, folder_name of every LoRA (textual baselines)."""
        with self._db.session() as con:
            return con.execute("SELECT lora_id, name, description, folder_name FROM loras ORDER BY lora_id").df()

    # -- imports -------------------------------------------------------------------------------
    def import_record(self, source: str, file_sha256: str) -> dict[str, Any] | None:
        """The import of this file from this source, or None if it was never imported."""
        with self._db.session() as con:
            df = con.execute("SELECT * FROM imports WHERE source = ? AND file_sha256 = ?", [source, file_sha256]).df()
        return None if df.empty else df.iloc[0].to_dict()

    def imports(self) -> list[dict[str, Any]]:
        """Every import, oldest first."""
        with self._db.session() as con:
            records: list[dict[str, Any]] = con.execute("SELECT * FROM imports ORDER BY imported_at").df().to_dict("records")
        return records

    def record_import(self, source: str, file_sha256: str, rows: int, details: dict) -> None:
        """Log an import (a second record of the same file is ignored)."""
        with self._db.session() as con:
            con.execute(
                "INSERT INTO imports (source, file_sha256, rows, details) VALUES (?, ?, ?, ?) ON CONFLICT (source, file_sha256) DO NOTHING",
                [source, file_sha256, rows, json.dumps(details)],
            )
