"""Errors shared by the engines and the Django shell (pure Python, no Django)."""


class UserInputError(Exception):
    """Input the user can fix; the message is one line that says what is wrong and how to fix it."""
