"""The one exception type that means "the user can fix this"."""

from __future__ import annotations

import os
import stat


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing data, unreadable file).

    The command line prints its message as one sentence and exits with status 2, without a traceback.
    """

    exit_code = 2


class Interrupted(Exception):
    """Training stopped by SIGINT or SIGTERM after saving its state; exits with 128 + the signal number."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


class ConfigError(UserError):
    """A configuration field out of range. The message names the field; the command line names its flag."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}.")
        self.field = field
        self.problem = problem


class NotARegularFile(UserError):
    """A path that exists but is a named pipe, a device or a socket, given where a file is read: reading one could
    block, or never end."""

    def __init__(self, path: str | os.PathLike[str], advice: str) -> None:
        mode = os.stat(path).st_mode
        kind = (
            "a named pipe"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a file"
        )
        super().__init__(f"{path} is not a regular file ({kind}); {advice}.")
