"""Errors a user can act on. The CLI prints them as one message with the remedy, never as a traceback."""


class UserError(Exception):
    """Something the user can fix (a missing file, a wrong device name, a busy port): say what and how."""
