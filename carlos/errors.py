"""The few domain exceptions a user of CARLoS can see.

Every error says what went wrong and what to do about it. All derive from
:class:`CarlosError` so the CLI and the dashboard can show them as messages
instead of tracebacks.
"""

from __future__ import annotations


class CarlosError(Exception):
    """Base class of every error CARLoS raises on purpose."""


class InvalidInputError(CarlosError, ValueError):
    """An argument (array, query, threshold, option) is not usable as given."""


class WeightsUnavailableError(CarlosError):
    """Model weights are not on this machine and may not be downloaded."""


class CorpusIntegrityError(CarlosError):
    """A corpus file is missing, corrupted or does not match its pinned hash."""


class InvalidLoRAFileError(CarlosError):
    """An uploaded LoRA file is unsafe, malformed or of an unsupported format."""


class UnsupportedBaseModelError(InvalidLoRAFileError):
    """A LoRA file was trained for a base model other than SDXL."""


class StoreBusyError(CarlosError):
    """The store stayed locked by another process for longer than the timeout."""


class StoreUnavailableError(CarlosError):
    """The store's server cannot be reached or refused the connection (the message never holds credentials)."""


class NotFoundError(CarlosError, KeyError):
    """A LoRA, job or representation id does not exist in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class PermissionDeniedError(CarlosError):
    """The current user may not perform this action (read-only access)."""
