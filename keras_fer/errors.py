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


def check_integer(value, name, minimum=1, *, received=None):
    """`value` as an int if it is a whole number (not a bool) >= `minimum`, else FerOptionError.

    Args:
        value: the value given.
        name: how the message names it (`"--every"`, "Argument `width`").
        minimum: the smallest value allowed.
        received: the name after "Received:" (default `name`).

    Example:
    >>> check_integer(3.0, "--every")
    3
    """
    import math
    import numbers

    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value != int(value) or value < minimum):
        raise FerOptionError(f"{name} must be an integer >= {minimum}. Received: {received or name}={value!r}")
    return int(value)


def check_finite(value, name, minimum=None, *, positive=False, received=None):
    """`value` as a float if it is a finite number (not a bool), >= `minimum` when given, > 0
    when `positive`; else FerOptionError.

    Example:
    >>> check_finite(0.5, "noise", 0)
    0.5
    """
    import math
    import numbers

    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or (minimum is not None and value < minimum) or (positive and value <= 0)):
        bound = " > 0" if positive else "" if minimum is None else f" >= {minimum:g}"
        raise FerOptionError(f"{name} must be a finite number{bound}. Received: {received or name}={value!r}")
    return float(value)


def short_list(items, limit=3):
    """The first `limit` of `items` joined by commas, with ", ..." when there are more: the lists
    messages quote (the files in the way, the faces with an empty map).

    Example:
    >>> short_list(["a.png", "b.png", "c.png", "d.png"])
    'a.png, b.png, c.png, ...'
    """
    items = [str(item) for item in items]
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
