"""The project's own error type.

Every error a user can cause (bad config, bad data, bad checkpoint) is a ``TagtuneError``
whose message says what is wrong, where (field, file:line, split and sentence index) and how
to fix it. Entry points print the message alone, not a library traceback.
"""

from __future__ import annotations


class TagtuneError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the whole message."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        parts = [f"{where}: {what}" if where else what]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))


class ConfigError(TagtuneError):
    """An invalid setting; ``where`` names the field."""


class DataError(TagtuneError):
    """Unreadable or inconsistent data; ``where`` names file:line or split/sentence."""


class CheckpointError(TagtuneError):
    """A checkpoint or output directory that cannot be used as asked."""
