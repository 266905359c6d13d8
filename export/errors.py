"""Errors the export CLI turns into one clear line and a non-zero exit."""


class ExportError(RuntimeError):
    """A user-facing failure: the message says what went wrong and what to do."""
