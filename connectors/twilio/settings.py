"""The [connectors.twilio] section: SMS and voice webhooks in, SMS out."""

from __future__ import annotations

from pydantic import Field

from inbox.config import Strict


class TwilioSettings(Strict):
    enabled: bool = False
    # The base URL Twilio calls; signatures are computed over it, not over the request URL.
    public_url: str = ""
    api_base_url: str = "https://api.twilio.com"
    account_sid_env: str = "TWILIO_ACCOUNT_SID"
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    # The number acknowledgements and replies are sent from, in E.164.
    from_number: str = ""
    # How long the signed URL of an MMS reply's file works (Twilio fetches it when it takes
    # the message, within seconds; the margin covers its own retries).
    media_url_ttl_s: int = Field(default=900, ge=60, le=86_400)
