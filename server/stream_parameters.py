"""The media stream's address and the `<Parameter>`s that carry a call from its webhook to its
stream: written into the TwiML by the webhook, read back from the stream's `start` frame."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping

MEDIA_PATH = "/ws/twilio-media"
# The console's page (Talk to your agent) opens the same socket, saying so: no Twilio signature
# is asked of it, only its own origin, and it may open test calls only (server/routes/media.py).
CONSOLE_QUERY = ("from", "console")
CONSOLE_MEDIA_PATH = f"{MEDIA_PATH}?{CONSOLE_QUERY[0]}={CONSOLE_QUERY[1]}"
DIRECTIONS = ("inbound", "outbound")


class BadStreamParameters(ValueError):
    """A `start` frame whose parameters are missing or malformed; the message says which."""


@dataclass(frozen=True)
class StreamParameters:
    call_sid: str
    business_id: int
    direction: str  # "inbound" or "outbound"
    from_number: str
    to_number: str
    # A test call from the console's "Talk to your agent"; a browser's websocket may carry no other
    # (server/routes/media.py).
    test: bool = False
    # A later stream of the call (back from a transfer no one took): its token is not the first's.
    resumed: bool = False

    def signed_text(self) -> str:
        """Everything the stream token vouches for, in one unambiguous string."""
        fields = (self.call_sid, str(self.business_id), self.direction, self.from_number, self.to_number)
        return "\n".join(fields + (("resumed",) if self.resumed else ()))

    def token_key(self, secret_key: str) -> str:
        """What its stream token is signed with: a test call's key is its own, so no real call's
        token opens a test stream, nor a test call's a real one."""
        if not self.test:
            return secret_key
        return hmac.new(secret_key.encode(), b"console-test-stream", hashlib.sha256).hexdigest()

    def twiml(self, token: str) -> dict[str, str]:
        """The `<Parameter>`s (and, for a test call, the browser's `customParameters`)."""
        params = {"call_sid": self.call_sid, "business_id": str(self.business_id), "direction": self.direction,
                  "from": self.from_number, "to": self.to_number, "token": token}
        if self.test:
            params["test"] = "1"
        if self.resumed:
            params["resumed"] = "1"
        return params

    @classmethod
    def from_start(cls, call_sid: str, custom: Mapping[str, str]) -> "StreamParameters":
        """Read back what the webhook wrote; `call_sid` is the stream's own, from Twilio."""
        if custom.get("call_sid") != call_sid:
            raise BadStreamParameters("call_sid parameter does not match the stream")
        business_id = custom.get("business_id", "")
        if not (business_id.isascii() and business_id.isdigit()) or len(business_id) > 18:
            raise BadStreamParameters("no business_id parameter")
        direction = custom.get("direction", "")
        if direction not in DIRECTIONS:
            raise BadStreamParameters("no direction parameter")
        return cls(call_sid=call_sid, business_id=int(business_id), direction=direction,
                   from_number=custom.get("from", ""), to_number=custom.get("to", ""), test=custom.get("test") == "1",
                   resumed=custom.get("resumed") == "1")
