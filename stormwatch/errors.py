"""Errors a user can fix; the CLI prints them as one line instead of a traceback."""


class UserError(Exception):
    """Something the user asked for cannot be done; the message says how to fix it."""
