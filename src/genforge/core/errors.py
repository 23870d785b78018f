"""User-facing errors: the CLI prints their message without a traceback."""


class GenforgeError(Exception):
    """An error caused by the user's input or environment, with a message that says what to fix."""


class ConfigError(GenforgeError):
    """A configuration field has a wrong name, type or value."""


class DataError(GenforgeError):
    """A data file or dataset directory is missing, malformed or inconsistent."""
