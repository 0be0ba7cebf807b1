"""Moving a store between backends: ``python -m carlos store copy --from A --to B`` (a DuckDB file
or a PostgreSQL URL on either side).

Every table is copied in batches through Arrow (columns named, so the two backends' column order
never matters), then each side is read back and compared: row counts, and a content hash per table
over the rows in a canonical form (vectors as float32, as both backends store them; timestamps,
text and bytes as they are), order-independent. A non-empty target is refused unless forced (then
its tables are emptied first). Sequences continue after the copied ids, and the target's data
version moves past the source's, so no reader of the target takes the copy for what it cached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from carlos.errors import InvalidInputError
from carlos.store.store import Store

#: Tables whose ids come from a sequence: (table, id column, sequence).
SEQUENCES = (
    ("representations", "rep_id", "rep_seq"),
    ("decisions", "decision_id", "decision_seq"),
    ("threshold_settings", "setting_id", "threshold_seq"),
    ("jobs", "job_id", "job_seq"),
)
#: Written by ``Store.open`` on both sides, never copied.
_OWN = ("schema_migrations",)
BATCH_ROWS = 20_000


@dataclass(frozen=True)
class TableCopy:
    """One table: rows in the source and the target after copying, and whether their contents agree."""

    table: str
    source_rows: int
    target_rows: int
    source_hash: str
    target_hash: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_hash == self.target_hash


@dataclass(frozen=True)
class CopyReport:
    """What ``copy_store`` did: per table counts and hashes, verified."""

    source: str  # as it may be shown (no credentials)
    target: str
    tables: list[TableCopy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "ok": self.ok,
            "tables": [{**t.__dict__, "ok": t.ok} for t in self.tables],
        }


def tables(store: Store) -> list[str]:
    """The store's data tables (the migrations' own table and the change tokens left out)."""
    return [t for t in store.table_counts() if t not in _OWN]


def copy_store(source: Store, target: Store, *, force: bool = False, progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy every table of ``source`` into ``target`` (both opened, so migrated) and verify it."""
    if source.schema_version() != target.schema_version():
        raise InvalidInputError(f"schema versions differ: {source.schema_version()} against {target.schema_version()}")
    names = tables(source)
    filled = {t: n for t, n in target.table_counts().items() if n and t not in _OWN}
    if filled and not force:
        raise InvalidInputError(
            f"the target {target.where} is not empty ({', '.join(f'{t}: {n}' for t, n in sorted(filled.items()))}); "
            "pass --force to replace its contents"
        )
    with target.transaction() as out:
        old = _version(out)
        for t in names:
            out.execute(f'DELETE FROM "{t}"')
        for t in names:
            _copy_table(source, out, t, progress)
        for table, column, sequence in SEQUENCES:
            top = out.execute(f"SELECT coalesce(max({column}), 0) FROM {table}").fetchone()[0]
            _advance(out, sequence, int(top))
        # the version moves past both the source's and the target's own: max(both) + 1
        out.execute("UPDATE meta SET value = CAST(? AS VARCHAR) WHERE key = 'data_version' AND CAST(value AS BIGINT) < ?", [str(old), old])
        target.bump(out)
    return CopyReport(source.where, target.where, [_verify(source, target, t) for t in names])


def _version(con: Any) -> int:
    row = con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()
    return int(row[0]) if row else 0


def _copy_table(source: Store, out: Any, table: str, progress: Callable[[str, int], None] | None) -> None:
    with source.session() as con:
        reader = con.sql(f'SELECT * FROM "{table}"').to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            chunk = pa.Table.from_batches([batch])
            # a column that is NULL throughout the batch has no type to give (PostgreSQL reads): left out, it is NULL
            chunk = chunk.select([f.name for f in chunk.schema if not pa.types.is_null(f.type)])
            cols = ", ".join(f'"{c}"' for c in chunk.column_names)
            out.register("carlos_copy_rows", chunk)
            try:
                out.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM carlos_copy_rows')
            finally:
                out.unregister("carlos_copy_rows")
            if progress is not None:
                progress(table, batch.num_rows)


def _advance(con: Any, sequence: str, top: int) -> None:
    """Make ``nextval(sequence)`` return more than ``top`` (PostgreSQL sets it; DuckDB has no setval, so
    values are drawn until past it)."""
    if con.dialect == "postgres":
        con.execute("SELECT setval(?, ?, true)", [sequence, max(top, 1)])
        return
    current = con.execute(f"SELECT nextval('{sequence}')").fetchone()[0]
    if top > current:
        con.execute(f"SELECT max(nextval('{sequence}')) FROM range(?)", [top - current])


def _canonical(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if items and all(isinstance(v, (float, np.floating)) for v in items):
            return np.asarray(items, dtype=np.float32).tobytes().hex()  # both backends store float32
        return [_canonical(v) for v in items]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _table_hash(store: Store, table: str) -> tuple[int, str]:
    # the target's data version moves on after the copy (readers of its old contents must not take the
    # copy for what they cached): every other row is compared
    where = " WHERE key <> 'data_version'" if table == "meta" else ""
    with store.session() as con:
        result = con.execute(f'SELECT * FROM "{table}"{where}')
        names = [d[0] for d in result.description]
        rows = result.fetchall()
    order = sorted(range(len(names)), key=lambda i: names[i])  # column order may differ between backends
    lines = sorted(repr([(names[i], _canonical(r[i])) for i in order]) for r in rows)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return len(rows), digest


def _verify(source: Store, target: Store, table: str) -> TableCopy:
    n_source, h_source = _table_hash(source, table)
    n_target, h_target = _table_hash(target, table)
    return TableCopy(table, n_source, n_target, h_source, h_target)
