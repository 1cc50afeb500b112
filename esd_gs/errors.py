"""User-facing errors: the CLI prints these as one line and exits with their code."""


class UserError(Exception):
    """Bad input (config, prompt, file, missing weights). Message is one line, no traceback."""

    exit_code = 2
    label = "error: "


class Interrupted(UserError):
    """The user stopped a command (Ctrl-C); the message says what was kept."""

    exit_code = 130
    label = ""
