"""Errors the CLI reports as one line and a non-zero exit, never a traceback."""


class CliError(Exception):
    """A problem the user can fix; ``exit_code`` 2 for bad arguments or input, 1 for a failed job."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
