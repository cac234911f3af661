"""The [connectors.telegram] section: a bot, by long polling or by webhook.

Secrets are named, never held: `token_env` and `webhook_secret_env` are environment
variables. The token is part of every Bot API URL, so it is also masked in every log line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from inbox.config import Strict


class TelegramSettings(Strict):
    enabled: bool = False
    # "polling": one instance asks getUpdates (under the poller lock, the offset checkpointed
    # with the updates); "webhook": Telegram posts each update to /telegram/webhook.
    mode: Literal["polling", "webhook"] = "polling"
    # The Bot API; tests point it at a local fake.
    api_base_url: str = "https://api.telegram.org"
    # The bot's token from BotFather ("123456:ABC..."): in the environment only.
    token_env: str = "TELEGRAM_BOT_TOKEN"
    # Webhook mode: the secret Telegram sends back in X-Telegram-Bot-Api-Secret-Token.
    webhook_secret_env: str = "TELEGRAM_WEBHOOK_SECRET"
    # Webhook mode: the public URL of /telegram/webhook. When set, Parity registers it with
    # setWebhook at start; when empty, register it yourself (docs/channels/telegram.md).
    webhook_url: str = ""
    # Polling: how long one getUpdates waits for updates (Telegram allows up to 50 s) and
    # how many it takes at once (1-100).
    poll_timeout_s: int = Field(default=30, ge=0, le=50)
    poll_limit: int = Field(default=100, ge=1, le=100)
    # How often a standby instance asks for the poller lock.
    standby_retry_seconds: float = Field(default=10.0, gt=0)
    # Media (photos, documents, voice): attempts before giving up (then noted on the
    # message), and a bound per file. The Bot API serves files up to 20 MB.
    media_attempts: int = Field(default=5, ge=1)
    media_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # Seconds for one Bot API request (a long poll gets poll_timeout_s on top).
    timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("api_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("api_base_url is an http(s) URL")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _hook(cls, value: str) -> str:
        # Telegram delivers webhooks over HTTPS only.
        if value and not value.startswith("https://"):
            raise ValueError("webhook_url is an https URL")
        return value
