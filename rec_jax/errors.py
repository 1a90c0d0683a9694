"""Errors the user can fix: a bad config value, a malformed data file, a missing input.

``rec_jax.main`` ends a run that raises a :class:`UserError` with one line,
``error: <message>``, and exit status 2; anything else is a bug and keeps its
traceback. So a message here must say everything on its own: which key, file
or path, what was wrong and what to do.

Each class also subclasses the built-in exception these sites raised before
(``ValueError``, ``FileNotFoundError``, ``FloatingPointError``), so callers and
tests that catch those keep working.

This module imports nothing of rec_jax, so every package may raise these.
"""

from typing import NoReturn


class UserError(Exception):
    """A problem in what the user gave the run, not in the code."""


class ConfigError(UserError, ValueError):
    """A config value that is unknown or does not fit; the message names the key,
    e.g. ``config.data.split='bogus': use one of ('loo_time', 'ratio', 'cold_items')``."""


class DataError(UserError, ValueError):
    """A raw data file that cannot be read; the message names file, line and field."""


class MissingInputError(UserError, FileNotFoundError):
    """A file the run needs is missing (a teacher's artifacts or params, a prepared
    data folder); the message names the path and what makes it."""


class StaleInputError(UserError, ValueError):
    """An input file exists but was made for another config, split or code version;
    the message says how to remake it."""


class NonFiniteError(UserError, FloatingPointError):
    """The loss became NaN or inf; the message names the steps and the last good
    checkpoint, and what to change."""


def fail(message) -> NoReturn:
    """Ends a command-line tool on a mistake the user can fix: one line on stderr, status 2."""
    import sys

    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    sys.stderr.write(f"error: {line}\n")
    sys.exit(2)
