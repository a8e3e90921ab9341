"""The library's error for bad input (a name, file or setting a user gave).

Raised by the pipeline and the loaders; the command line prints its message on one line,
without a traceback, and exits with status 2.
"""


class UserError(Exception):
    """An error caused by bad input; its message names the problem in one line."""
