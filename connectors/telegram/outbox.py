"""Telegram out: acknowledgements and replies through the shared outbox drainer.

A row goes to the person's private chat with the bot (in a private chat the chat id is the
user id, the identity's handle) by `sendMessage`. A reply with files goes as one Bot API
message per file (`sendPhoto` for a JPEG, PNG or WebP photo, `sendDocument` for anything
else, uploaded as multipart/form-data), the text as the first file's caption when it fits
Telegram's 1,024, else as a message of its own before them. Each part sent is kept on the
row (`parts_sent`), so a retry after a failure part-way sends only the rest: the person
never gets the same file twice. What a failure means:
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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from connectors.outbox import Failure, Permanent, http_retriable
from connectors.telegram.api import BotApiError, Upload, call_sync, hide_token
from connectors.telegram.settings import TelegramSettings
from inbox.channels import CHANNEL_FACTS
from inbox.downloads import sniff_image
from inbox.outbox import Claimed, OutFile, save_route
from inbox.secrets import Secret

TOKEN_PAUSE_S = 3600.0
MAX_TEXT = CHANNEL_FACTS["telegram"].max_text
# The Bot API's bound on a photo's or document's caption.
MAX_CAPTION = 1024
# sendPhoto takes photos up to 10 MB (Telegram recompresses them); a larger image, or one
# whose bytes are not a JPEG, PNG or WebP, goes as a document, byte for byte.
MAX_PHOTO_BYTES = 10 * 1024 * 1024
# Multipart uploads through the Bot API take files up to 50 MB.
MAX_FILE_BYTES = 50 * 1024 * 1024
PHOTO_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})


@dataclass(frozen=True)
class Part:
    """One Bot API call of a row: its method, its text (message text or caption, may be
    empty for a file) and the index of its file in the row's files (None: text only)."""

    method: str
    text: str
    file: int | None = None


def photo(file: OutFile) -> bool:
    """Whether a file goes by sendPhoto: its bytes (not its declared type) are a photo
    Telegram takes, within the photo bound."""
    return len(file.data) <= MAX_PHOTO_BYTES and sniff_image(file.data) in PHOTO_TYPES


def plan(text: str, files: Sequence[OutFile]) -> list[Part]:
    """The calls that send `text` and `files`, in order (pure; tests/channels/telegram)."""
    if not files:
        return [Part("sendMessage", text)]
    parts: list[Part] = []
    caption = ""
    if len(text) <= MAX_CAPTION:
        caption = text
    elif text:
        parts.append(Part("sendMessage", text))
    for index, file in enumerate(files):
        method = "sendPhoto" if photo(file) else "sendDocument"
        parts.append(Part(method, caption if index == 0 else "", index))
    return parts


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

    def __init__(
        self, settings: TelegramSettings, token: Secret, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        self.token = token
        # Where the parts of a row with files already sent are kept (None: not kept, and a
        # retry part-way would send the first parts again).
        self.engine = engine
        # The message ids of each row's parts, for `refs`.
        self._sent: dict[int, list[str]] = {}

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def send(self, row: Claimed) -> str | None:
        chat = row.recipient.strip()
        if not chat.lstrip("-").isdigit():
            raise Permanent(f"{row.recipient!r} is not a Telegram user id")
        if len(row.body) > MAX_TEXT:
            raise Permanent(f"the text is {len(row.body)} characters, over Telegram's {MAX_TEXT}")
        for file in row.files:
            if len(file.data) > MAX_FILE_BYTES:
                raise Permanent(f"{file.filename} is over the Bot API's {MAX_FILE_BYTES} bytes")
        parts = plan(row.body, row.files)
        done = row.payload.get("parts_sent")
        sent: list[str] = [str(i) for i in done] if isinstance(done, list) else []
        for part in parts[len(sent) :]:
            message_id = self._send_part(int(chat), part, row.files)
            sent.append(f"{chat}:{message_id}" if message_id is not None else "")
            if len(parts) > 1 and self.engine is not None:
                # Kept before the next part: a failure after this one retries only the rest.
                save_route(self.engine, row.id, {**row.payload, "parts_sent": sent})
        self._sent[row.id] = [s for s in sent if s]
        return next((s for s in sent if s), None)

    def _send_part(self, chat: int, part: Part, files: Sequence[OutFile]) -> int | None:
        payload: dict[str, Any] = {"chat_id": chat}
        upload = None
        if part.file is None:
            payload["text"] = part.text
        else:
            file = files[part.file]
            if part.text:
                payload["caption"] = part.text
            field = "photo" if part.method == "sendPhoto" else "document"
            upload = Upload(field, file.filename, file.content_type, file.data)
        answer = call_sync(self.settings, self.token, part.method, payload, upload)
        message_id = answer.get("message_id") if isinstance(answer, dict) else None
        return message_id if isinstance(message_id, int) else None

    def refs(self, row: Claimed, provider_id: str | None) -> Sequence[str]:
        """What a person's reply to our message points at (their `reply_to_message`), so it
        joins the case: the same form the parser gives a message's own id. A reply with
        files is several messages: an answer to any of them joins."""
        ids = self._sent.pop(row.id, [provider_id] if provider_id else [])
        return tuple(f"telegram:{i}" for i in ids if i)

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)
