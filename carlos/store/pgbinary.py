"""Arrow tables to and from PostgreSQL in its binary wire format.

A Direction is 512 floats. Going through Python values, as psycopg's row API does, makes a million
of them half a billion Python floats each way: minutes and gigabytes. Here a ``real[]`` column
crosses as whole arrays instead: written into ``COPY … (FORMAT BINARY)`` rows by numpy, and read
from a binary cursor by a loader that views each array's bytes as one float32 vector. Results
stream in batches (libpq's chunked rows), so memory is one batch, as with DuckDB's record batches.

Writing: columns of strings, bytes, numbers, booleans and float32 vectors are encoded here; a table
with any other column (``text[]``, timestamps) is copied row by row (:func:`fill_temporary_table`).
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

#: PostgreSQL type OIDs read in binary, and the Arrow type each becomes.
FLOAT4_ARRAY = 1021
_READ_TYPES: dict[int, str] = {
    16: "bool",
    17: "binary",
    18: "string",
    19: "string",
    20: "int64",
    21: "int64",
    23: "int64",
    25: "string",
    700: "float32",
    701: "float64",
    1043: "string",
    1114: "timestamp",
    1184: "timestamptz",
    1700: "float64",
    FLOAT4_ARRAY: "float32_list",
}
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
_NULL = struct.pack(">i", -1)
_CHUNK_BYTES = 8 << 20


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "bool": pa.bool_(),
        "binary": pa.binary(),
        "string": pa.string(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "float32_list": pa.list_(pa.float32()),
    }[kind]


@functools.cache
def _float4_array_loader() -> type:
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class Float4ArrayLoader(Loader):
        """A binary ``real[]`` as a float32 vector: the array header, then (length, value) pairs."""

        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            head = np.frombuffer(data, dtype=">i4", count=3)
            if head[0] == 0:
                return np.zeros(0, dtype=np.float32)
            if head[0] != 1 or head[1] != 0:
                raise ValueError("only one-dimensional real[] without NULL elements are read as vectors")
            n = int(np.frombuffer(data, dtype=">i4", count=1, offset=12)[0])
            pairs = np.frombuffer(data, dtype=">i4", count=2 * n, offset=20).reshape(n, 2)
            return pairs[:, 1].view(">f4").astype(np.float32)

    return Float4ArrayLoader


def read_batches(raw: Any, sql: str, params: Any, batch_rows: int) -> Iterator[Any]:
    """Arrow record batches of ``batch_rows`` rows, streamed from the server in binary (one batch in
    memory). Columns of the types above get their Arrow type from the table; others (``text[]``,
    ``double precision[]``) are inferred from their values, batch by batch."""
    import pyarrow as pa

    with raw.cursor(binary=True) as cur:
        cur.adapters.register_loader(FLOAT4_ARRAY, _float4_array_loader())
        rows = cur.stream(sql, params, size=min(batch_rows, 4096))
        while chunk := list(itertools.islice(rows, batch_rows)):
            columns = [(d.name, _READ_TYPES.get(d.type_code)) for d in cur.description]
            arrays = [_array(list(values), kind) for values, (_, kind) in zip(zip(*chunk), columns)]
            yield pa.RecordBatch.from_arrays(arrays, names=[name for name, _ in columns])


def _array(values: list[Any], kind: str | None) -> Any:
    import pyarrow as pa

    if kind is None:
        return pa.array(values)
    if kind == "float32_list":
        lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int32, count=len(values))
        offsets = np.zeros(len(values) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        present = [v for v in values if v is not None]
        flat = np.concatenate(present) if present else np.zeros(0, dtype=np.float32)
        mask = pa.array([v is None for v in values]) if len(present) < len(values) else None
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()), mask=mask)
    if kind == "float64":  # numeric arrives as Decimal
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, _arrow_type(kind))


# ---------------------------------------------------------------------------------------------- write
def _fixed(values: Any, valid: np.ndarray | None, code: str) -> list[Any]:
    """(length, value) fields of a fixed-width column, NULLs as length -1."""
    size = np.dtype(code).itemsize
    rec = np.empty(len(values), dtype=[("n", ">i4"), ("v", code)])
    rec["n"] = size
    rec["v"] = values
    buf, width = rec.data.cast("B"), 4 + size
    fields: list[Any] = [buf[i * width : (i + 1) * width] for i in range(len(values))]
    if valid is not None:
        for i in np.flatnonzero(~valid):
            fields[int(i)] = _NULL
    return fields


def _vectors(column: Any) -> list[Any] | None:
    """A list<float32> column as binary ``real[]`` fields; None when its rows differ in length or hold NULLs."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if col.null_count or n == 0:
        return None if n else []
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
        flat = col.flatten().to_numpy(zero_copy_only=False)
    else:
        offsets = col.offsets.to_numpy()
        dims = np.diff(offsets)
        if dims.min() != dims.max():
            return None
        dim = int(dims[0])
        flat = col.flatten().to_numpy(zero_copy_only=False)
    rec = np.empty(n, dtype=[("n", ">i4"), ("head", ">i4", 5), ("e", ">i4", (dim, 2))])
    rec["n"] = 20 + 8 * dim
    rec["head"] = (1, 0, 700, dim, 1)  # one dimension, no NULLs, float4 elements, dim of them from index 1
    rec["e"][:, :, 0] = 4
    rec["e"][:, :, 1] = np.ascontiguousarray(flat, dtype=np.float32).astype(">f4").view(">i4").reshape(n, dim)
    buf, width = rec.data.cast("B"), rec.dtype.itemsize  # row slices share the one buffer
    return [buf[i * width : (i + 1) * width] for i in range(n)]


def _fields(column: Any) -> list[Any] | None:
    import pyarrow as pa

    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [_NULL if v is None else struct.pack(">i", len(b := v.encode("utf-8"))) + b for v in column.to_pylist()]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [_NULL if v is None else struct.pack(">i", len(v)) + v for v in column.to_pylist()]
    if (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) and pa.types.is_float32(t.value_type):
        return _vectors(column)
    if pa.types.is_floating(t) and t.bit_width in (32, 64):
        code = ">f4" if t.bit_width == 32 else ">f8"
    elif pa.types.is_integer(t) and not pa.types.is_uint64(t):
        code = ">i8"
    elif pa.types.is_boolean(t):
        code = "?"
    else:
        return None
    valid = None
    if column.null_count:
        valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        column = column.fill_null(False if code == "?" else 0)
    return _fixed(column.to_numpy(zero_copy_only=False), valid, code)


def copy_rows(table: Any) -> Iterator[bytes] | None:
    """``table`` (Arrow) as the byte chunks of a ``COPY … FROM STDIN (FORMAT BINARY)`` whose columns
    are of the types :func:`pg_type` gives them; None when a column's type has no
    binary encoder here (the caller copies rows instead)."""
    fields = [_fields(c.combine_chunks() if hasattr(c, "combine_chunks") else c) for c in table.columns]
    columns = [f for f in fields if f is not None]
    if len(columns) < len(fields):
        return None
    count = struct.pack(">h", table.num_columns)

    def chunks() -> Iterator[bytes]:
        out = bytearray(_SIGNATURE)
        for row in zip(*columns):
            out += count
            for field in row:
                out += field
            if len(out) >= _CHUNK_BYTES:
                yield bytes(out)
                out = bytearray()
        out += _TRAILER
        yield bytes(out)

    return chunks()


def pg_type(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pg_type(arrow_type.value_type) + "[]"
    if pa.types.is_floating(arrow_type):
        return "real" if arrow_type.bit_width == 32 else "double precision"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytea"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    return "text"


def fill_temporary_table(raw: Any, name: str, table: Any) -> None:
    """``table`` (Arrow) as the temporary table ``name`` on ``raw``: in binary when :func:`copy_rows`
    encodes every column, else row by row through psycopg."""
    cols = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in table.schema)
    names = ", ".join(f'"{f.name}"' for f in table.schema)
    chunks = copy_rows(table)
    raw.execute(f'CREATE TEMPORARY TABLE "{name}" ({cols})')
    with raw.cursor() as cur:
        if chunks is not None:
            with cur.copy(f'COPY "{name}" ({names}) FROM STDIN (FORMAT BINARY)') as copy:
                for chunk in chunks:
                    copy.write(chunk)
            return
        with cur.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
            for row in zip(*(table.column(i).to_pylist() for i in range(table.num_columns))):
                copy.write_row(row)
