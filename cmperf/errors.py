"""The one error type users can cause. The CLI prints it as one line and exits with ``exit_code``."""


class CmperfError(Exception):
    """A problem the user can fix: the message names the flag or file and the fix. Exit code 2."""

    exit_code = 2
