"""The error every reader raises on a file it cannot read correctly."""

from __future__ import annotations


class InputFormatError(ValueError):
    """An input file cannot be read as any of the supported formats, or its content is invalid.

    The message names the file (and the column / variable) and says what to do.
    """
