"""Errors a user can cause.

Every such condition raises a subclass of :class:`UserError` whose message is one sentence that names
the offending value; the CLI prints it and exits with code 2, without a traceback.
"""


class UserError(Exception):
    """A problem in the user's input, files or environment, explained in one sentence."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A flag or argument has a value that cannot work (unknown name, size out of range, ...)."""


class DataError(UserError):
    """A data file is missing, truncated, corrupt or inconsistent."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are not where activelab looks, and cannot be downloaded."""


class BudgetExceededError(ConfigError):
    """More items were requested than the pool holds."""


class StateError(UserError):
    """A run directory or state file is corrupt, foreign, locked or of an unknown format."""


class UnlabelledDataError(UserError):
    """The oracle was asked for labels that the dataset does not have (only a person can give them)."""
