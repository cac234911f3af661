"""Sending WhatsApp, Messenger and Instagram rows through the shared outbox drainer.

Meta's reply windows are facts of the channel, decided here before anything is sent
(`window`, pure):
- WhatsApp: free text within 24 hours of the customer's last message; after that only an
  approved template (`whatsapp_ack_template` for acknowledgements, `whatsapp_reply_template`
  for agents' replies), whose one parameter is the case reference. The customer's answer
  to it opens the window again.
- Messenger and Instagram Direct: within 24 hours a plain response; then, for 7 days, the
  HUMAN_AGENT tag (a person answering, which is what an agent's reply is); after that the
  reply is refused before sending, with the reason on the row, which the case shows.
- A public comment is answered by a public reply to it; no window applies.

A message has no idempotency key at Meta: a send whose answer was lost (a read timeout) is
"unknown" and left for an agent, never sent twice blindly.

An agent's files go as Meta takes them (`plan`, pure): each uploaded first as
multipart/form-data (WhatsApp: `POST /{phone-number-id}/media`, which answers a media id;
Messenger: the Attachment Upload API, `POST /me/message_attachments`, which answers an
attachment id), then sent as one message each that names the id. On WhatsApp the text is
the first file's caption when it fits 1,024 characters; Messenger has no captions, so the
text goes first as a message of its own. Each message sent is kept on the row
(`parts_sent`) before the next, so a retry after a failure part-way sends only the rest.
Outside WhatsApp's window only a template may go, and a template cannot carry the agent's
files: such a reply is refused with that reason rather than sent without them.

Instagram Direct takes a file by URL (`message.attachment = {type, payload: {url}}`, types
image, video and audio): Meta fetches it from a signed, expiring URL on our own listener
(`public_url` + /meta/media/..., connectors/media_url.py, the mechanism Twilio's MMS uses),
good for `media_url_ttl_s`. Images are PNG or JPEG by their bytes, up to 8 MB; video (MP4,
OGG, AVI, MOV, WEBM) and audio (AAC, M4A, WAV) by their declared type, up to 25 MB
(`instagram_media`, pure). Every file is checked before anything is sent: a reply with a
file Instagram does not take is refused whole, with the reason. Instagram has no captions:
the text goes first, then one message per file, kept on the row as on Messenger. A public
reply (to a comment) is text only, on every channel (inbox.compose `files_in_public`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, select

from connectors.media_url import signed_url
from connectors.meta.graph import (
    RATE_LIMITS,
    TOKEN_INVALID,
    TRANSIENT,
    UNREACHABLE,
    WINDOW_CLOSED,
    Graph,
    GraphError,
)
from connectors.meta.intake import MEDIA_PATH
from connectors.meta.settings import MetaSettings, WhatsAppTemplate
from connectors.outbox import Failure, http_retriable
from inbox.channels import CHANNEL_FACTS, IDENTITY_KIND_OF
from inbox.compose import files_in_public, files_in_window
from inbox.db import read
from inbox.downloads import sniff_image
from inbox.models import Identity, Message, utcnow
from inbox.outbox import Claimed, OutFile, save_route
from inbox.replies import reply_window
from inbox.uploads import declared_type

# What the case shows (the words, kept exactly): the registry's window facts.
TEMPLATE_REASON = CHANNEL_FACTS["whatsapp"].reply_window.outside
MESSENGER_CLOSED = CHANNEL_FACTS["messenger"].reply_window.outside
INSTAGRAM_CLOSED = CHANNEL_FACTS["instagram"].reply_window.outside
RATE_PAUSE_S = 60.0
TOKEN_PAUSE_S = 3600.0

Mode = Literal["text", "template", "human_agent", "refused"]

# WhatsApp's bound on an image's or a document's caption.
MAX_CAPTION = 1024


@dataclass(frozen=True)
class MediaRules:
    """What one Meta channel takes as files. An image goes inline when its bytes (by their
    signature, never the declared type) are one of `image_types` within `image_max`;
    anything else goes as a document (a "file" on Messenger), up to `file_max`."""

    image_types: frozenset[str]
    image_max: int
    file_max: int
    # The first file may carry the text as its caption (WhatsApp); else the text goes first.
    captions: bool


# WhatsApp: JPEG and PNG images up to 5 MB, documents up to 100 MB, captions.
WHATSAPP_MEDIA = MediaRules(
    frozenset({"image/jpeg", "image/png"}), 5 * 1024 * 1024, 100 * 1024 * 1024, True
)
# Messenger: JPEG, PNG and GIF images, any attachment up to 25 MB, no captions.
MESSENGER_MEDIA = MediaRules(
    frozenset({"image/jpeg", "image/png", "image/gif"}), 25 * 1024 * 1024, 25 * 1024 * 1024, False
)


def media_rules(channel: str) -> MediaRules | None:
    """The file rules of a Meta channel whose sender sends files (None: it does not yet)."""
    if channel == "whatsapp":
        return WHATSAPP_MEDIA
    if channel == "messenger":
        return MESSENGER_MEDIA
    return None


# A reply with files queued inside the window that closed before it went: the sender's
# refusal, in the words the reply form uses for one asked for outside the window.
OUTSIDE_WINDOW_FILES = files_in_window("whatsapp", "template") or ""


@dataclass(frozen=True)
class MediaPart:
    """One message of a reply with files: "text", or a file ("image", "document"; on
    Instagram "image", "video", "audio") with its index in the row's files and its caption
    ("" for none)."""

    kind: Literal["text", "image", "document", "video", "audio"]
    text: str
    file: int | None = None


MB = 1024 * 1024
# Instagram Direct, by URL: what Meta's Send API documents for Instagram messages.
INSTAGRAM_IMAGES = frozenset({"image/jpeg", "image/png"})
INSTAGRAM_IMAGE_MAX = 8 * MB
INSTAGRAM_VIDEO = frozenset(
    {"video/mp4", "video/ogg", "video/x-msvideo", "video/avi", "video/quicktime", "video/webm"}
)
INSTAGRAM_AUDIO = frozenset(
    {"audio/aac", "audio/mp4", "audio/x-m4a", "audio/m4a", "audio/wav", "audio/x-wav",
     "audio/wave", "audio/vnd.wave"}
)  # fmt: skip
INSTAGRAM_AV_MAX = 25 * MB
INSTAGRAM_TYPES = "PNG and JPEG images, video (MP4, OGG, AVI, MOV, WEBM) and audio (AAC, M4A, WAV)"


@dataclass(frozen=True)
class InstagramMedia:
    """How one file goes in an Instagram Direct message: its attachment type, and the
    content type its signed URL serves it with."""

    kind: Literal["image", "video", "audio"]
    content_type: str


def instagram_media(file: OutFile) -> InstagramMedia | str:
    """How `file` goes in an Instagram Direct message, or why it cannot. An image is told by
    its bytes (an "image/png" that is really HTML is not one); Meta itself checks the
    video and audio it fetches, so those go by their declared type."""
    sniffed = sniff_image(file.data)
    declared = declared_type(file.content_type)
    found: InstagramMedia | None = None
    limit = INSTAGRAM_AV_MAX
    if sniffed in INSTAGRAM_IMAGES:
        found, limit = InstagramMedia("image", sniffed), INSTAGRAM_IMAGE_MAX
    elif sniffed is None and declared in INSTAGRAM_VIDEO:
        found = InstagramMedia("video", declared)
    elif sniffed is None and declared in INSTAGRAM_AUDIO:
        found = InstagramMedia("audio", declared)
    if found is None:
        return f"{file.filename}: an Instagram Direct message carries {INSTAGRAM_TYPES} only"
    if len(file.data) > limit:
        return (
            f"{file.filename} is {len(file.data)} bytes; Instagram takes {found.kind} of at "
            f"most {limit} bytes"
        )
    return found


def instagram_plan(text: str, files: Sequence[OutFile]) -> list[MediaPart] | str:
    """The messages that carry `text` and `files` on Instagram (no captions: the text
    first, then a message per file), or why a file cannot go (the first one's reason)."""
    parts = [MediaPart("text", text)] if text or not files else []
    for index, file in enumerate(files):
        found = instagram_media(file)
        if isinstance(found, str):
            return found
        parts.append(MediaPart(found.kind, "", index))
    return parts


def media_kind(rules: MediaRules, file: OutFile) -> Literal["image", "document"]:
    inline = len(file.data) <= rules.image_max and sniff_image(file.data) in rules.image_types
    return "image" if inline else "document"


def plan(rules: MediaRules, text: str, files: Sequence[OutFile]) -> list[MediaPart]:
    """The messages that carry `text` and `files` under a channel's `rules`."""
    if not files:
        return [MediaPart("text", text)]
    parts: list[MediaPart] = []
    caption = text if rules.captions and len(text) <= MAX_CAPTION else ""
    if text and not caption:
        parts.append(MediaPart("text", text))
    for index, file in enumerate(files):
        parts.append(MediaPart(media_kind(rules, file), caption if index == 0 else "", index))
    return parts


@dataclass(frozen=True)
class Window:
    mode: Mode
    reason: str | None = None


def window(channel: str, last_inbound: datetime | None, now: datetime) -> Window:
    """How a private message to a person may go now, given when they last wrote to us (the
    rule the agent's reply form shows too: inbox.replies.reply_window)."""
    mode, reason = reply_window(channel, last_inbound, now)
    return Window("human_agent" if mode == "tagged" else mode, reason)


class Stop(Exception):
    """Meta refused the token: nothing is sent on this channel until it is renewed."""


class Refused(Exception):
    """Refused before sending: the reason is the case's to show."""


def classify(channel: str, exc: BaseException) -> Failure:
    """What a failed send means (the codes are listed in connectors/meta/graph.py)."""
    if isinstance(exc, Refused):
        return Failure(False, str(exc))
    if not isinstance(exc, GraphError):
        return Failure(True, f"{type(exc).__name__}: {exc}"[:500])
    text = str(exc)
    if exc.code in TOKEN_INVALID:
        why = f"{channel} token invalid or expired (renew it): {text}"
        return Failure(False, why, pause_s=TOKEN_PAUSE_S, stop=Stop(why))
    if exc.code in RATE_LIMITS:
        return Failure(True, f"rate limited: {text}", pause_s=RATE_PAUSE_S)
    if exc.unsure:
        return Failure(False, text, unknown=True)
    if exc.code == 131047:
        return Failure(False, f"{TEMPLATE_REASON} (Meta refused free text: {text})")
    if exc.code == 131026:
        return Failure(False, f"this number cannot receive WhatsApp messages: {text}")
    if exc.code in UNREACHABLE or exc.subcode in WINDOW_CLOSED:
        closed = MESSENGER_CLOSED if channel == "messenger" else INSTAGRAM_CLOSED
        return Failure(False, f"{closed} ({text})")
    if exc.code in TRANSIENT or exc.status == 0 or http_retriable(exc.status):
        return Failure(True, text)
    return Failure(False, text)


def reply_route(payload: dict[str, Any], recipient: str) -> dict[str, Any]:
    """A public comment is answered by a public reply to it; anything else privately."""
    route = dict(payload)
    target = payload.get("in_reply_to_external_id") or payload.get("external_id")
    if payload.get("visibility") == "public" and target:
        route.update(mode="comment", comment_id=str(target))
    else:
        route.update(mode="message", to=recipient)
    return route


class MetaSender:
    """One channel's sender (whatsapp, messenger or instagram) for the outbox drainer."""

    resend_safe = False

    def __init__(
        self,
        channel: str,
        settings: MetaSettings,
        graph: Graph,
        engine: Engine,
        *,
        media_key: bytes | None = None,
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.graph = graph
        self.engine = engine
        # Signs the URLs Meta fetches an Instagram reply's files from (connectors/meta/
        # intake.py MEDIA_CONTEXT, under the app secret); None: files cannot go by URL.
        self.media_key = media_key

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def reply_route(self, row: Claimed) -> dict[str, Any]:
        return reply_route(row.payload, row.recipient)

    def last_inbound(self, handle: str) -> datetime | None:
        """When this person last wrote to us on this channel (the window's start)."""
        with read(self.engine) as conn:
            at = conn.execute(
                select(func.max(Message.received_at))
                .join(Identity, Identity.id == Message.identity_id)
                .where(
                    Message.channel == self.channel,
                    Message.direction == "inbound",
                    Identity.kind == IDENTITY_KIND_OF[self.channel],
                    Identity.handle == handle,
                )
            ).scalar_one_or_none()
            conn.rollback()
        if at is not None and at.tzinfo is None:
            # SQLite hands back naive datetimes; the store writes UTC.
            at = at.replace(tzinfo=UTC)
        return at

    def send(self, row: Claimed) -> str | None:
        payload = row.payload
        if payload.get("mode") == "comment" and row.files:
            # The reply form refuses this first; a row queued otherwise never loses its files.
            raise Refused(files_in_public(self.channel))
        if payload.get("mode") == "comment":
            return self._comment(str(payload["comment_id"]), row.body)
        to = str(payload.get("to") or row.recipient)
        decided = window(self.channel, self.last_inbound(to), utcnow())
        if decided.mode == "refused":
            raise Refused(decided.reason)
        if row.files:
            return self._with_files(row, to, decided)
        if self.channel == "whatsapp":
            return self._whatsapp(row, to, decided)
        return self._messenger(to, decided, {"text": row.body})

    def _messenger(self, to: str, decided: Window, message: dict[str, Any]) -> str | None:
        body: dict[str, Any] = {"recipient": {"id": to}, "message": message}
        if decided.mode == "human_agent":
            body.update(messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
        else:
            body["messaging_type"] = "RESPONSE"
        answer = self.graph.post("me/messages", body)
        return str(answer.get("message_id") or "") or None

    def _plan(self, row: Claimed, decided: Window) -> list[MediaPart]:
        """The messages of a reply with files on this channel; Refused where it cannot go."""
        if self.channel == "instagram":
            if self.media_key is None or not self.settings.public_url:
                raise Refused(
                    "Instagram fetches a reply's files from connectors.meta.public_url, "
                    "which is not set"
                )
            found = instagram_plan(row.body, row.files)
            if isinstance(found, str):
                raise Refused(found)
            return found
        rules = media_rules(self.channel)
        if rules is None:
            raise Refused(f"Parity's {self.channel} sender does not send files yet")
        if self.channel == "whatsapp" and decided.mode != "text":
            raise Refused(OUTSIDE_WINDOW_FILES)
        for file in row.files:
            if len(file.data) > rules.file_max:
                raise Refused(f"{file.filename} is over {self.channel}'s {rules.file_max} bytes")
        return plan(rules, row.body, row.files)

    def _with_files(self, row: Claimed, to: str, decided: Window) -> str | None:
        parts = self._plan(row, decided)
        done = row.payload.get("parts_sent")
        sent: list[str] = [str(i) for i in done] if isinstance(done, list) else []
        for part in parts[len(sent) :]:
            sent.append(self._part(row, to, decided, part) or "")
            if len(parts) > 1:
                # Kept before the next part: a failure after this one retries only the rest.
                save_route(self.engine, row.id, {**row.payload, "parts_sent": sent})
        return next((s for s in sent if s), None)

    def _part(self, row: Claimed, to: str, decided: Window, part: MediaPart) -> str | None:
        if part.file is None:
            if self.channel == "whatsapp":
                return self._whatsapp(row, to, decided)
            return self._messenger(to, decided, {"text": part.text})
        file = row.files[part.file]
        if self.channel == "instagram":
            return self._messenger(to, decided, {"attachment": self._by_url(file)})
        if self.channel == "whatsapp":
            media = self.graph.post_file(
                f"{self.settings.whatsapp_phone_number_id}/media",
                {"messaging_product": "whatsapp", "type": file.content_type},
                "file",
                file.filename,
                file.content_type,
                file.data,
            )
            media_id = str(media.get("id") or "")
            if not media_id:
                raise GraphError(200, None, None, "the media upload answered no id")
            item: dict[str, Any] = {"id": media_id}
            if part.kind == "document":
                item["filename"] = file.filename
            if part.text:
                item["caption"] = part.text
            return self._whatsapp_send(to, {"type": part.kind, part.kind: item})
        kind = "image" if part.kind == "image" else "file"
        attachment = {"type": kind, "payload": {"is_reusable": False}}
        uploaded = self.graph.post_file(
            "me/message_attachments",
            {"message": json.dumps({"attachment": attachment})},
            "filedata",
            file.filename,
            file.content_type,
            file.data,
        )
        attachment_id = str(uploaded.get("attachment_id") or "")
        if not attachment_id:
            raise GraphError(200, None, None, "the attachment upload answered no attachment_id")
        return self._messenger(
            to,
            decided,
            {"attachment": {"type": kind, "payload": {"attachment_id": attachment_id}}},
        )

    def _by_url(self, file: OutFile) -> dict[str, Any]:
        """An Instagram attachment naming `file` by a signed URL Meta fetches it from."""
        found = instagram_media(file)
        assert not isinstance(found, str) and self.media_key is not None  # checked by _plan
        url = signed_url(
            self.settings.public_url,
            MEDIA_PATH,
            self.media_key,
            hashlib.sha256(file.data).hexdigest(),
            found.content_type,
            utcnow(),
            self.settings.media_url_ttl_s,
        )
        return {"type": found.kind, "payload": {"url": url}}

    def _whatsapp(self, row: Claimed, to: str, decided: Window) -> str | None:
        body: dict[str, Any] = {}
        if decided.mode == "text":
            body.update(type="text", text={"body": row.body, "preview_url": False})
        else:
            template = (
                self.settings.whatsapp_ack_template
                if row.kind == "ack"
                else self.settings.whatsapp_reply_template
            )
            body.update(type="template", template=template_body(template, row))
        return self._whatsapp_send(to, body)

    def _whatsapp_send(self, to: str, message: dict[str, Any]) -> str | None:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            # The Cloud API takes the number without its "+".
            "to": to.removeprefix("+"),
            **message,
        }
        path = f"{self.settings.whatsapp_phone_number_id}/messages"
        answer = self.graph.post(path, body)
        messages = answer.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "") or None
        return None

    def _comment(self, comment_id: str, text: str) -> str | None:
        # Facebook answers a comment with a comment on it; Instagram with a reply.
        edge = "comments" if self.channel == "messenger" else "replies"
        answer = self.graph.post(f"{comment_id}/{edge}", {"message": text})
        return str(answer.get("id") or "") or None

    def classify(self, exc: BaseException) -> Failure:
        return classify(self.channel, exc)


def template_body(template: WhatsAppTemplate, row: Claimed) -> dict[str, Any]:
    """The template message: its name, language, and the case reference as {{1}}."""
    if not template.name:
        which = "whatsapp_ack_template" if row.kind == "ack" else "whatsapp_reply_template"
        raise Refused(f"{TEMPLATE_REASON}, but [connectors.meta] {which} is not set")
    return {
        "name": template.name,
        "language": {"code": template.language},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": row.case_reference or ""}],
            }
        ],
    }
