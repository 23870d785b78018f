"""User-facing errors: the CLI prints their message without a traceback."""


class GenforgeError(Exception):
    """An error caused by the user's input or environment, with a message that says what to fix."""


class ConfigError(GenforgeError):
    """A configuration field has a wrong name, type or value."""


class DataError(GenforgeError):
    """A data file or dataset directory is missing, malformed or inconsistent."""


class DiskFullError(GenforgeError):
    """The device ran out of space (or quota) while writing; what was there before is untouched."""


class LockedError(GenforgeError):
    """Another live process is writing the same run or dataset directory."""
