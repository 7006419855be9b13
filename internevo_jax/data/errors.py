"""The one exception type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data or data settings.

    The message is the single paragraph shown to the user: it names the file (and line, where one
    applies) and says how to fix the problem.
    """
