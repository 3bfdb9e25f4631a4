"""Exceptions users see. Owns nothing else."""


class SnakebatchError(Exception):
    """Base of snakebatch's own errors."""


class ConfigError(SnakebatchError, ValueError):
    """A bad option, source or output: the message says which and what would be accepted."""


class JobError(SnakebatchError):
    """The job cannot go on (the output cannot be written, the lock is held, ...)."""
