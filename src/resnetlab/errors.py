"""The one exception type that means "the user can fix this"."""


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
