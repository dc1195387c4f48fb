"""User-facing errors: what was wrong, the valid choices, and how to fix it.

The CLI prints a :class:`UserError` as one paragraph and exits with status 2, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """An error caused by the user's input (config, data, command line), not by a bug."""

    def __init__(self, problem: str, choices: Iterable[str] | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.choices = list(choices) if choices is not None else None
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one-paragraph message shown to the user."""
        parts = [self.problem]
        if self.choices is not None:
            parts.append("Valid choices: " + ", ".join(self.choices) + ".")
        if self.fix:
            parts.append("Fix: " + self.fix + ".")
        return " ".join(parts)


class ConfigError(UserError):
    """A config value is unknown, of the wrong type, or impossible."""


class DataError(UserError):
    """A dataset is missing, truncated or corrupt."""
