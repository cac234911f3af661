"""Telegram out: acknowledgements and replies through the shared outbox drainer.

A row goes to the person's private chat with the bot (in a private chat the chat id is the
user id, the identity's handle) by `sendMessage`. What a failure means:
- 429: Telegram says how long to wait (`parameters.retry_after`); the row is due again
  after exactly that, not on the curve (sooner would be refused again);
- 401: the token is refused: nothing is sent until it is renewed, the channel stops;
- 403 (the person blocked the bot, or never started it) and 400 (chat not found, text too
  long): failed with Telegram's words, which the case shows; sending again changes nothing;
- 5xx, no connection: retried on the shared curve;
- no answer in time: the message may have gone, and the Bot API cannot list what a bot
  sent: "unknown", left for an agent, never sent twice blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.outbox import Failure, Permanent, http_retriable
from connectors.telegram.api import BotApiError, call_sync, hide_token
from connectors.telegram.settings import TelegramSettings
from inbox.channels import CHANNEL_FACTS
from inbox.outbox import Claimed
from inbox.secrets import Secret

TOKEN_PAUSE_S = 3600.0
MAX_TEXT = CHANNEL_FACTS["telegram"].max_text


class TokenRefused(Exception):
    """Telegram refused the bot token: nothing is sent until it is renewed."""


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, Permanent):
        return Failure(False, str(exc))
    if not isinstance(exc, BotApiError):
        return Failure(True, hide_token(f"{type(exc).__name__}: {exc}")[:500])
    text = str(exc)
    code = exc.code if exc.code is not None else exc.status
    if code == 429:
        # Telegram's own wait, at least a second so a 0 is no busy loop.
        wait = max(1.0, exc.retry_after) if exc.retry_after is not None else None
        return Failure(True, f"rate limited: {text}", delay_s=wait)
    if code == 401:
        why = f"Telegram refused the bot token (renew it): {text}"
        return Failure(False, why, pause_s=TOKEN_PAUSE_S, stop=TokenRefused(why))
    if exc.unsure:
        return Failure(False, text, unknown=True)
    if exc.status == 0 or http_retriable(code):
        return Failure(True, text)
    return Failure(False, text)


class TelegramSender:
    """The telegram channel's sender for the outbox drainer."""

    channel = "telegram"
    # A Bot API message has no id we choose: a resend after a crash could post it twice.
    resend_safe = False

    def __init__(self, settings: TelegramSettings, token: Secret) -> None:
        self.settings = settings
        self.token = token

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def send(self, row: Claimed) -> str | None:
        chat = row.recipient.strip()
        if not chat.lstrip("-").isdigit():
            raise Permanent(f"{row.recipient!r} is not a Telegram user id")
        if len(row.body) > MAX_TEXT:
            raise Permanent(f"the text is {len(row.body)} characters, over Telegram's {MAX_TEXT}")
        payload: dict[str, Any] = {"chat_id": int(chat), "text": row.body}
        answer = call_sync(self.settings, self.token, "sendMessage", payload)
        message_id = answer.get("message_id") if isinstance(answer, dict) else None
        return f"{chat}:{message_id}" if isinstance(message_id, int) else None

    def refs(self, row: Claimed, provider_id: str | None) -> Sequence[str]:
        """What a person's reply to our message points at (their `reply_to_message`), so it
        joins the case: the same form the parser gives a message's own id."""
        return (f"telegram:{provider_id}",) if provider_id else ()

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)
