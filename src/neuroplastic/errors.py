"""The error types of bad input, shared by every layer of the package.

An error the *user* caused (an argument, a recipe key or value, a data file that is missing, truncated or
corrupt) is raised as a :class:`BadInput` (or :class:`DatasetNotFoundError` for missing data files); its
message names the parameter or file, what was given and what is allowed or what to do. The command line
turns exactly :data:`USER_ERRORS` into one line on stderr and exit code 2; any other exception is a bug
and keeps its traceback (exit code 1), so a broken builder is never reported as a typo in a recipe.

:class:`BadInput` is a ``ValueError`` and :class:`DatasetNotFoundError` a ``FileNotFoundError``, so code
that catches those keeps working.
"""

from __future__ import annotations


class BadInput(ValueError):
    """A value the user gave is not allowed; the message names it, what was given and what is allowed."""


class BadType(BadInput, TypeError):
    """A value of the wrong kind, or a keyword argument that is not taken: a ``TypeError``, as Python raises
    for those, and bad input."""


class DataFileError(BadInput):
    """A data file is present but cannot be what it should be (truncated, corrupt, wrong checksum).

    The message names the file, what was expected, what was found, and what to do about it.
    """


class DatasetNotFoundError(FileNotFoundError):
    """Files of a data set are missing and could not be downloaded; the message names them and the folder."""


#: the exceptions that are the user's input, not a bug: the CLI reports them in one line, exit code 2
USER_ERRORS: tuple[type[Exception], ...] = (BadInput, DatasetNotFoundError)
