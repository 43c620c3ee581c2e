"""Errors a user can cause and fix. The CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input, missing data, mismatched files: say what is wrong and what to do, no traceback."""


class ConfigError(UserError):
    """A configuration key is unknown, has the wrong type, or is out of range."""
