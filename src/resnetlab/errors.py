"""The one exception type that means "the user can fix this"."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing data, unreadable file).

    The command line prints its message as one sentence and exits with status 2, without a traceback.
    """

    exit_code = 2
