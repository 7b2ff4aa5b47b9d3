"""Errors raised by the library. Only the CLI turns them into messages and exit codes."""


class FerError(ValueError):
    """Base class of every error keras-fer raises for bad input or options."""


class FerDataError(FerError):
    """Malformed data: the message names the file, the 1-based line or image, and the field.

    Args:
        message: what is wrong.
        path: the file or folder.
        row: the 1-based line number in a CSV (the header is line 1), if any.
        field: the column or item at fault, if any.
    """

    def __init__(self, message, path=None, row=None, field=None):
        self.reason = message
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"line {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class FerModelError(FerError):
    """A model file that is missing, not a Keras model, or does not fit the data."""


class FerOptionError(FerError):
    """A bad command-line or configuration option."""
