"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (config, prompt, file, missing weights). Message is one line, no traceback."""

    exit_code = 2
