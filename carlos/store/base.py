"""What a repository needs from the store: the :class:`Database` protocol.

The repositories (:mod:`~carlos.store.loras`, :mod:`~carlos.store.representations`,
:mod:`~carlos.store.jobs`, :mod:`~carlos.store.review`, :mod:`~carlos.store.caches`)
hold their SQL and reach the database only through these few members of
:class:`carlos.store.store.Store`, which satisfies the protocol structurally. Typing
against the protocol keeps the repositories from importing ``store.py`` (which
imports them), so the package stays free of import cycles.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol


class Database(Protocol):
    """Locked connections and the data-version stamp (see :class:`carlos.store.store.Store`)."""

    @property
    def path(self) -> Path:
        """The DuckDB file (named in error messages)."""
        ...

    @property
    def where(self) -> str:
        """The store as messages may name it (a URL without credentials)."""
        ...

    def session(self) -> AbstractContextManager[Any]:
        """A locked connection, reused by nested calls in the same thread."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """An all-or-nothing group of writes (nested ones join the outer one)."""
        ...

    def bump(self, con: Any) -> None:
        """Advance ``data_version`` on ``con`` (every write to LoRAs or representations)."""
        ...
