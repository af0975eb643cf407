"""A tool's answer when it cannot do what was asked: for the model to speak about, never a crash."""
from __future__ import annotations


class ToolProblem(Exception):
    """`code` names the problem for the model; the message says it in a few English words."""

    def __init__(self, code: str, message: str, **details):
        super().__init__(message)
        self.code = code
        self.details = details

    def result(self) -> dict:
        return {"ok": False, "error": self.code, "message": str(self), **self.details}
