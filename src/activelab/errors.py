"""Errors a user can cause.

Every such condition raises a subclass of :class:`UserError` whose message is one sentence that names
the offending value; the CLI prints it and exits with code 2, without a traceback.
"""


class UserError(Exception):
    """A problem in the user's input, files or environment, explained in one sentence."""

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        super().__init__(_original_sentence(message))


def _original_sentence(message: str) -> str:
    """The user's sentence from ``message``, also when a DataLoader worker re-raised the error.

    torch re-raises an exception from a worker process by calling its class with the worker's whole
    traceback as the message; the sentence we raised is the traceback's last line, after the class name.
    """
    if "Original Traceback" not in message:
        return message
    last_line = message.rstrip().splitlines()[-1]
    _, separator, sentence = last_line.partition(": ")
    return sentence if separator else last_line


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
