"""User-facing errors.

An `IbsrError` is a problem with the user's input or environment (a bad file, a missing
index, a wrong option). The CLI prints its message as one line and exits non-zero, with no
traceback; anything else is a bug and keeps its traceback.
"""


class IbsrError(Exception):
    """A one-line, actionable error: say what was wrong, which file, and what to do."""

    def __init__(self, message: str, path=None):
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
