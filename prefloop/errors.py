"""Errors that mean "bad input": the command line prints them as one line, no traceback.

A leaf module (imports nothing of ours), so that every package can raise these.
Everything else (KeyError, IndexError, TypeError ...) is a bug in our code and keeps
its traceback: that is why no built-in family such as LookupError is caught wholesale.
"""


class BadInput(Exception):
    """The user's input is wrong; the message names the file, row, field, flag or name."""


class InputError(BadInput, ValueError):
    """Invalid user input detected by our own validation (file, row, field in the message)."""


class ConfigError(BadInput, ValueError):
    """One line naming the config file or flag that is wrong."""


class DataFileError(BadInput, ValueError):
    """One line naming the data file, the row and what is wrong."""


class ModelNotFoundError(BadInput, ValueError):
    """A model name that is neither embedded, a local directory, nor a cached hub id."""


class NotFoundError(BadInput, LookupError):
    """A project, user or other named thing that does not exist in the store."""


class StoreError(BadInput, RuntimeError):
    """The store cannot be opened or used: missing, unreachable, foreign, or of a newer schema."""


# PermissionError: signing in and admin rights in the app (labeling.app.auth), unwritable paths.
UserError = (BadInput, PermissionError)
