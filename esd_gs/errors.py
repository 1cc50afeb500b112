"""User-facing errors: the CLI prints these as one line and exits with their code."""


class UserError(Exception):
    """Bad input (config, prompt, file, missing weights). Message is one line, no traceback."""

    exit_code = 2
    label = "error: "


class Interrupted(UserError):
    """The user stopped a command (Ctrl-C, or SIGTERM from a scheduler); the message says what was kept.
    Exit code 128 + the signal's number, as a shell reports a process the signal ended."""

    exit_code = 130
    label = ""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signum
