"""The media stream's address and the `<Parameter>`s that carry a call from its webhook to its
stream: written into the TwiML by the webhook, read back from the stream's `start` frame."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

MEDIA_PATH = "/ws/twilio-media"
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
    # A later stream of the call (back from a transfer no one took): its token is not the first's.
    resumed: bool = False

    def signed_text(self) -> str:
        """Everything the stream token vouches for, in one unambiguous string."""
        fields = (self.call_sid, str(self.business_id), self.direction, self.from_number, self.to_number)
        return "\n".join(fields + (("resumed",) if self.resumed else ()))

    def twiml(self, token: str) -> dict[str, str]:
        parameters = {"call_sid": self.call_sid, "business_id": str(self.business_id), "direction": self.direction,
                      "from": self.from_number, "to": self.to_number, "token": token}
        if self.resumed:
            parameters["resumed"] = "1"
        return parameters

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
                   from_number=custom.get("from", ""), to_number=custom.get("to", ""),
                   resumed=custom.get("resumed") == "1")
