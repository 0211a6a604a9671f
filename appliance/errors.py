"""The base of every error a user can cause.

Its message is one line meant for an operator: the CLI prints it as is and exits non-zero, and the API
turns it into OpenAI-shaped error JSON. Anything else that escapes is a bug.
"""


class ApplianceError(Exception):
    """A failure with a one-line, user-facing explanation."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InvalidRequest(ApplianceError):
    """A request whose shape or values cannot be served; `param` names the field (an API 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
