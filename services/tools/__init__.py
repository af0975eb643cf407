"""The model's function tools: which a call gets (`declarations`), what they do (`appointments`),
and how a call runs them (`runner.CallTools`)."""
from services.tools.runner import CallTools, ToolContext

__all__ = ["CallTools", "ToolContext"]
