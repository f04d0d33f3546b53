"""Errors that mean "bad input": the command line prints them as one line, no traceback."""

from prefloop.config import ConfigError
from prefloop.data import DataFileError
from prefloop.models import ModelNotFoundError


class InputError(ValueError):
    """Invalid user input detected by our own validation (file, row, field in the message)."""


# LookupError covers "no such project/annotator"; each entry names the file/row/field itself.
UserError = (InputError, ConfigError, DataFileError, ModelNotFoundError, LookupError, PermissionError)
