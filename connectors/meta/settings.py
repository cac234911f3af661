"""The [connectors.meta] section: Meta's webhook in, the Graph API out.

Secrets are named, never held: each `*_env` is the environment variable with the value.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from inbox.config import Strict


class WhatsAppTemplate(Strict):
    """An approved message template (WhatsApp Manager): its name and language code.

    The template's body has one parameter, {{1}}, which Parity fills with the case reference:
    a template's text is fixed by Meta's approval, only its parameters are ours.
    """

    name: str = ""
    language: str = "en_US"


class MetaSettings(Strict):
    enabled: bool = False
    # The secret typed into the developer console's webhook form; Meta echoes it back once.
    verify_token_env: str = "META_VERIFY_TOKEN"
    # The app secret: every POST is signed with it (X-Hub-Signature-256).
    app_secret_env: str = "META_APP_SECRET"
    graph_base_url: str = "https://graph.facebook.com"
    graph_version: str = "v21.0"
    # WhatsApp: the business phone number's id, and a system user's token with
    # whatsapp_business_messaging.
    whatsapp_phone_number_id: str = ""
    whatsapp_token_env: str = "META_WHATSAPP_TOKEN"
    # Messenger and Instagram: the page's id, and a page access token (pages_messaging,
    # instagram_manage_messages, pages_manage_engagement, instagram_manage_comments).
    page_id: str = ""
    page_token_env: str = "META_PAGE_TOKEN"
    # The Instagram professional account linked to the page (its comments' replies).
    instagram_account_id: str = ""
    # Sent instead of free text outside WhatsApp's 24-hour window: the acknowledgement of
    # a case, and an agent's reply (the customer answers it, and the window opens again).
    whatsapp_ack_template: WhatsAppTemplate = WhatsAppTemplate()
    whatsapp_reply_template: WhatsAppTemplate = WhatsAppTemplate()
    # The base URL Meta reaches this listener at (where /meta/webhook is served): Instagram
    # fetches an agent's files from signed URLs under it (/meta/media/...). Empty: a reply
    # with files on Instagram is refused with that reason.
    public_url: str = ""
    # How long such a URL works (Meta fetches the file while it takes the message; the
    # margin covers its own retries).
    media_url_ttl_s: int = Field(default=900, ge=60, le=86_400)
    # Media downloads: attempts before giving up (then noted on the message), and a bound.
    media_attempts: int = Field(default=5, ge=1)
    media_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    # Seconds for one Graph API request.
    timeout_s: float = Field(default=30.0, gt=0)
    # Seconds between the connector's passes: media downloads, profile names, the outbox
    # counts of its status, and any delivery report the webhook did not get to apply.
    poll_seconds: float = Field(default=10.0, gt=0)

    @field_validator("graph_version")
    @classmethod
    def _version(cls, value: str) -> str:
        # Put into URLs: a version is "v" and digits, nothing that could change the path.
        head, _, tail = value.removeprefix("v").partition(".")
        if not value.startswith("v") or not head.isdigit() or (tail and not tail.isdigit()):
            raise ValueError('graph_version looks like "v21.0"')
        return value

    @field_validator("graph_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("graph_base_url is an http(s) URL")
        return value.rstrip("/")

    def graph_url(self, path: str) -> str:
        return f"{self.graph_base_url}/{self.graph_version}/{path.lstrip('/')}"
