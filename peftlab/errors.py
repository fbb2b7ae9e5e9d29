"""Errors shared by the engines and the Django shell (pure Python, no Django)."""


class UserInputError(Exception):
    """Input the user can fix; the message is one line that says what is wrong and how to fix it."""


def error_line(error: BaseException) -> str:
    """The line of a loader's error that says what is wrong: torch's size mismatch (shapes included) rather
    than its heading `Error(s) in loading state_dict for ...`, else the first line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    mismatch = [line for line in lines if line.startswith("size mismatch")]
    return (mismatch or lines or [type(error).__name__])[0]
