"""Twitter/X acknowledgements and the delivery of outbox rows of channel "twitter".

Acknowledgement rules:
- a public mention gets a short public reply (create_tweet with in_reply_to_tweet_id): the
  case reference and the ETA from fixed text, nothing personal, and an invitation to DM;
- with public replies off in settings, the acknowledgement goes by DM where the account can
  send one; otherwise the case records why none was sent;
- a DM gets the full acknowledgement by DM, with the case's tagged reference.
The secret token never appears in a public reply: anyone could read it there and use it to
join the case, which on a desk that restores hijacked accounts is an account takeover.

Delivery goes through the shared outbox drainer (connectors/outbox.py); `TwitterSender`
adds only X's transport, its error classification and its lookup. A tweet or a DM carries
no idempotency key, so a send whose answer was lost is "unknown": the drainer's next pass
looks it up at X (our own timeline, or the DM conversation), and it is left for an agent
when it cannot be found, rather than posted twice.

An agent's files go by DM only (`dm_media`, `dm_parts`, pure). X takes one medium per DM,
so a reply with several files is several DMs: the text with the first file, then one DM
per further file, in the order the agent attached them. Each file is uploaded first
(v1.1's chunked media upload, category dm_image, dm_gif or dm_video), then sent by its
media id. Every file is checked against X's DM media rules before anything is uploaded:
JPEG, PNG and WEBP images up to 5 MB, GIFs up to 15 MB, MP4 video up to 512 MB, told by
their bytes rather than the declared type; a reply with any other file is refused whole,
with the reason, never sent without it. Each DM sent is kept on the row (`parts_sent`)
before the next, so a retry after a failure part-way sends only the rest. A reply with
files whose answer was lost is left for an agent: the lookup could match its first DM's
text and call the row sent while later files never went. A public reply is text only
(inbox.compose `files_in_public`); the sender refuses one with files all the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from sqlalchemy import Engine

from connectors.config import OutboxSettings
from connectors.outbox import DrainReport, Failure, Lookup, OutboxDrainer
from connectors.twitter.api import XApi, XError, is_duplicate_content, seconds_until
from connectors.twitter.parse import tweet_ref
from connectors.twitter.settings import TwitterSettings
from inbox import outbox
from inbox.compose import files_in_public
from inbox.downloads import sniff_image
from inbox.i18n import default_or_own
from inbox.outbox import Claimed, OutFile, save_route
from normalizer.ack_plan import AckCase, AckOut, AckRoute
from normalizer.threads import case_tag

CHANNEL = "twitter"
Route = Literal["tweet", "dm"]


# --- pure rules -------------------------------------------------------------------------


def choose_ack(
    *,
    visibility: str,
    public_replies: bool,
    dm_available: bool,
    acknowledge: bool,
    automated: str | None,
) -> tuple[Route | None, str]:
    """How a new Twitter case is acknowledged, or why it is not."""
    if not acknowledge:
        return None, "imported history is never acknowledged"
    if automated:
        return None, f"automated message: {automated}"
    if visibility == "private":
        if dm_available:
            return "dm", "direct message acknowledged by direct message"
        return None, "direct messages cannot be sent with this account's access (403)"
    if public_replies:
        return "tweet", "public mention acknowledged by a public reply"
    if dm_available:
        return "dm", "public replies are off in settings: acknowledged by direct message"
    return None, (
        "public replies are off in settings and direct messages cannot be sent with this "
        "account's access"
    )


def ack_text(
    template: str, *, reference: str, eta: str, tag: str = "", status_url: str = ""
) -> str:
    # Settings validation already limited the placeholders to these (a public text's to
    # {reference} and {eta}: the caller passes the others only for a DM).
    return template.format(reference=reference, eta=eta, tag=tag, status_url=status_url)


def localized(settings: TwitterSettings, key: str, language: str) -> str:
    """The template `key` in the case's language: our translation of the default, or the
    operator's own text as they wrote it."""
    default = str(TwitterSettings.model_fields[key].default)
    return default_or_own(language, str(getattr(settings, key)), default)


# --- the ack route: how a new case is acknowledged -------------------------------------------

# The connector checkpoint row holding what the route must know of the running connector:
# {"dm_available": false} once the DM endpoint answered 403 (this app's access cannot
# send DMs), written by the intake loop (connectors/twitter/intake.py) in the same
# transaction as its DM checkpoint. No row yet means nothing refused DMs so far.
ACK_STATE = (CHANNEL, "ack_route")


def dm_available(state: Mapping[str, Any]) -> bool:
    return bool(state.get("dm_available", True))


def ack_route(settings: TwitterSettings, case: AckCase, state: Mapping[str, Any]) -> AckOut | str:
    """A new Twitter case's acknowledgement, or why it gets none. Pure: the worker calls it
    in the transaction that opens the case (normalizer/worker.py), with ACK_STATE's value."""
    route, reason = choose_ack(
        visibility=case.visibility,
        public_replies=settings.public_replies,
        dm_available=dm_available(state),
        acknowledge=case.acknowledge,
        automated=case.automated,
    )
    if route == "tweet":
        # Public: fixed text with the reference and the ETA only, never the token.
        return AckOut(
            recipient=case.handle,
            body=ack_text(
                localized(settings, "public_ack_template", case.language),
                reference=case.reference,
                eta=case.eta_words,
            ),
            payload={
                "mode": "tweet",
                "in_reply_to_tweet_id": case.external_id,
                "reference": case.reference,
            },
            reason=reason,
            audit={"route": route, "reason": reason},
        )
    if route == "dm":
        # A DM is private: the full acknowledgement, with the tagged reference.
        return AckOut(
            recipient=case.handle,
            body=ack_text(
                localized(settings, "dm_ack_template", case.language),
                reference=case.reference,
                eta=case.eta_words,
                tag=case_tag(case.reference, case.token),
                # A DM is read by the person alone: the link with its token may go there.
                status_url=case.status_url,
            ),
            payload={"mode": "dm", "participant_id": case.handle, "reference": case.reference},
            reason=reason,
            audit={"route": route, "reason": reason},
        )
    return reason


def ack_routes(settings: TwitterSettings) -> dict[str, AckRoute]:
    """The connector's entry of the ack-route table (connectors/registry.py)."""
    return {CHANNEL: AckRoute(partial(ack_route, settings), state=ACK_STATE)}


# --- files: X's DM media rules -------------------------------------------------------------

MB = 1024 * 1024


@dataclass(frozen=True)
class DmMedia:
    """How one file goes in a DM: the type X is told, the upload's category, X's bound."""

    media_type: str
    category: str
    max_bytes: int
    what: str


DM_IMAGE = {
    "image/jpeg": DmMedia("image/jpeg", "dm_image", 5 * MB, "an image"),
    "image/png": DmMedia("image/png", "dm_image", 5 * MB, "an image"),
    "image/webp": DmMedia("image/webp", "dm_image", 5 * MB, "an image"),
    "image/gif": DmMedia("image/gif", "dm_gif", 15 * MB, "a GIF"),
}
DM_VIDEO = DmMedia("video/mp4", "dm_video", 512 * MB, "a video")
DM_TYPES = "JPEG, PNG, WEBP and GIF images and MP4 video"


def is_mp4(data: bytes) -> bool:
    """An ISO media file (MP4, MOV) by its bytes: a "ftyp" box first."""
    return data[4:8] == b"ftyp"


def dm_media(file: OutFile) -> DmMedia | str:
    """How `file` goes in an X DM, or why it cannot: its kind is told by its bytes, never
    by the type the agent's browser declared."""
    kind = DM_IMAGE.get(sniff_image(file.data) or "")
    if kind is None and is_mp4(file.data) and file.content_type.lower().startswith("video/"):
        kind = DM_VIDEO
    if kind is None:
        return f"{file.filename}: an X Direct Message carries {DM_TYPES} only"
    if len(file.data) > kind.max_bytes:
        return (
            f"{file.filename} is {len(file.data)} bytes; X takes {kind.what} of at most "
            f"{kind.max_bytes} bytes in a Direct Message"
        )
    return kind


def dm_refusal(files: Sequence[OutFile]) -> str | None:
    """Why a reply's files cannot all go by DM (the first file's reason), or None."""
    for file in files:
        found = dm_media(file)
        if isinstance(found, str):
            return found
    return None


def dm_parts(text: str, count: int) -> list[tuple[str, int | None]]:
    """The DMs that carry `text` and `count` files: (its text, the file's index or None).
    One medium per DM: the text rides with the first file, the others go alone."""
    if count == 0:
        return [(text, None)]
    return [(text if index == 0 else "", index) for index in range(count)]


# --- delivery --------------------------------------------------------------------------------


class Stop(Exception):
    """The connector must stop sending for now (credits depleted, or authentication failed)."""

    def __init__(self, error: XError) -> None:
        super().__init__(str(error))
        self.error = error


class NoAnswerId(Exception):
    """X accepted the send, but its answer carried no id: it may well exist; look it up."""


class AlreadyPosted(Exception):
    """X refused a tweet as a duplicate of one we posted: it probably exists; look it up."""


class Unroutable(Exception):
    """A row whose route is neither a tweet nor a DM: it can never be sent."""


class Refused(Exception):
    """Refused before anything was sent (a file X does not take): the reason is the case's."""


class TwitterSender:
    """Sends the outbox rows of channel "twitter": a public reply tweet or a DM, via XApi.

    The shared drainer (connectors/outbox.py) claims, records, retries and recovers; this
    adds X's transport, its error classification and its lookup of unknown rows."""

    channel = CHANNEL
    resend_safe = False  # a tweet or a DM carries no id X could drop a copy by
    # Our timeline and DM list are searched back a short way only: not finding a row there
    # does not prove it was never posted, so it is left for an agent rather than resent.
    resend_if_absent = False

    def __init__(
        self,
        api: XApi,
        engine: Engine,
        *,
        credits_retry_seconds: float,
        halt: threading.Event | None = None,
    ) -> None:
        self.api = api
        # Where the DMs of a reply with files already sent are kept (`parts_sent`).
        self.engine = engine
        self.credits_retry_seconds = credits_retry_seconds
        # Set when the connector stops: an upload or a wait for X's processing ends before its
        # next request, and the reply goes back to the queue (`Halted`) with the DMs it
        # already sent kept on it.
        self.halt = halt if halt is not None else threading.Event()

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def reply_route(self, row: Claimed) -> dict[str, Any]:
        """Where an agent's reply goes (the drainer keeps it on the row)."""
        return reply_route(row.payload)

    def send(self, row: Claimed) -> str | None:
        mode = row.payload.get("mode")
        if row.files and mode == "tweet":
            raise Refused(files_in_public(CHANNEL))
        if mode == "tweet":
            try:
                body = self.api.create_tweet(row.body, row.payload.get("in_reply_to_tweet_id"))
            except XError as exc:
                if exc.kind == "forbidden" and is_duplicate_content(exc.body):
                    raise AlreadyPosted(str(exc)) from exc
                raise
            provider_id = _data_field(body, "id")
        elif mode == "dm" and row.files:
            provider_id = self._dm_with_files(row)
        elif mode == "dm":
            participant = str(row.payload.get("participant_id") or row.recipient)
            provider_id = _data_field(self.api.create_dm(participant, row.body), "dm_event_id")
        else:
            raise Unroutable(f"unknown twitter send mode {mode!r}")
        if provider_id is None:
            raise NoAnswerId("X accepted the send but its answer carried no id")
        return provider_id

    def _dm_with_files(self, row: Claimed) -> str | None:
        """The reply's DMs, one per file, each file uploaded just before its DM; the first
        DM's event id. Parts already sent (a retry) are skipped."""
        refusal = dm_refusal(row.files)
        if refusal is not None:
            raise Refused(refusal)
        participant = str(row.payload.get("participant_id") or row.recipient)
        parts = dm_parts(row.body, len(row.files))
        done = row.payload.get("parts_sent")
        sent: list[str] = [str(i) for i in done] if isinstance(done, list) else []
        # One time for the uploads and X's processing per attempt, shared by the reply's
        # files: per file, a reply of many slow videos could outlast the outbox's sending
        # lease, and another instance would take the row while this one still sends. What is
        # left goes later. A stop ends it before the next request (upload_media's `halt`).
        deadline = time.monotonic() + self.api.media_processing_timeout_s
        for text, index in parts[len(sent) :]:
            assert index is not None  # files are present: every part carries one
            file = row.files[index]
            kind = dm_media(file)
            assert not isinstance(kind, str)  # dm_refusal checked every file
            media_id = self.api.upload_media(
                file.data,
                file.filename,
                kind.media_type,
                kind.category,
                timeout=deadline - time.monotonic(),
                halt=self.halt,
            )
            event = _data_field(self.api.create_dm(participant, text, media_id), "dm_event_id")
            if event is None:
                raise NoAnswerId("X accepted a DM with a file but its answer carried no id")
            sent.append(event)
            if len(parts) > 1:
                # Kept before the next part: a failure after this one retries only the rest.
                save_route(self.engine, row.id, {**row.payload, "parts_sent": sent})
        return sent[0] if sent else None

    def refs(self, row: Claimed, provider_id: str | None) -> list[str]:
        # A reply to our public reply threads into this case by our tweet's id.
        return (
            [tweet_ref(provider_id)] if provider_id and row.payload.get("mode") == "tweet" else []
        )

    def classify(self, exc: BaseException) -> Failure:
        message = str(exc)
        if isinstance(exc, NoAnswerId | AlreadyPosted):
            # Either the answer was lost, or X says we already posted this very text: the
            # item probably exists. Look for it instead of posting again.
            return Failure(False, message, unknown=True)
        if isinstance(exc, Unroutable | Refused):
            return Failure(False, message)
        if not isinstance(exc, XError):
            # Something we did not foresee, mid-request: X may have it. Never resent blindly.
            return Failure(False, f"{type(exc).__name__}: {exc}", unknown=True)
        if exc.kind == "rate_limited":
            # The request was refused, not processed: safe to send again after the reset.
            return Failure(True, message, delay_s=max(seconds_until(exc.reset_at), 1.0))
        if exc.kind in ("credits", "auth"):
            # X refused before doing anything, and we stop sending: not an attempt that counts.
            wait = self.credits_retry_seconds if exc.kind == "credits" else 3600.0
            return Failure(False, message, pause_s=wait, stop=Stop(exc))
        if exc.kind == "transient":
            return Failure(True, message)
        if exc.kind == "unsure":
            return Failure(False, message, unknown=True)
        return Failure(False, message)

    def reconcile(self, row: Claimed) -> Lookup:
        """Look the row up on our own timeline (a tweet) or in the DM conversation."""
        if row.files:
            # Its first DM's text would match while later files never went: an agent looks.
            return Lookup(None)
        since = row.created_at - timedelta(minutes=1)
        found = (
            self._find_tweet(row, since)
            if row.payload.get("mode") == "tweet"
            else self._find_dm(row, since)
        )
        return Lookup(found, self.refs(row, found))

    def _find_tweet(self, item: Claimed, since: datetime) -> str | None:
        target = str(item.payload.get("in_reply_to_tweet_id") or "")
        for tweet in self.api.own_tweets(since).get("data") or []:
            replied = {
                str(r.get("id"))
                for r in tweet.get("referenced_tweets") or []
                if r.get("type") == "replied_to"
            }
            if (not target or target in replied) and _same_text(tweet.get("text"), item.body):
                return str(tweet["id"])
        return None

    def _find_dm(self, item: Claimed, since: datetime) -> str | None:
        participant = str(item.payload.get("participant_id") or item.recipient)
        for event in self.api.dm_events_with(participant).get("data") or []:
            created = _parse_time(event.get("created_at"))
            if (
                str(event.get("sender_id")) == self.api.account_id
                and _same_text(event.get("text"), item.body)
                and (created is None or created >= since)
            ):
                return str(event["id"])
        return None


def drainer(
    engine: Engine, sender: TwitterSender, worker: str, settings: OutboxSettings | None = None
) -> OutboxDrainer:
    """The shared drainer for Twitter's rows, with the [outbox] retry curve and sending lease
    (the settings validate media_processing_timeout_s against that lease), in batches of 10."""
    chosen = settings if settings is not None else OutboxSettings()
    return OutboxDrainer(
        engine, sender, chosen.model_copy(update={"batch_size": 10}), worker=worker
    )


def recover_orphans(engine: Engine) -> int:
    """Rows left "sending" by a process that died: "unknown", looked up at X next.

    Called by the holder of the twitter poller lock before it sends anything: it is the
    only sender, so every row still "sending" is a dead process's, lease or not.
    """
    return outbox.recover(engine, CHANNEL, resend=False, sole_sender=True)


def tally(counts: dict[str, int], report: DrainReport) -> None:
    """Add one drain's outcomes to the connector's status counts (sent/retry/failed/unknown).

    A row found at X after an unknown outcome moves from "unknown" to "sent"."""
    counts["sent"] += report.sent + report.reconciled
    counts["retry"] += report.retried
    counts["failed"] += report.failed
    counts["unknown"] = max(
        counts["unknown"] + report.unknown + report.recovered - report.reconciled, 0
    )


def _data_field(body: Mapping[str, Any], field: str) -> str | None:
    data = body.get("data")
    if isinstance(data, dict) and data.get(field) is not None:
        return str(data[field])
    return None


def _same_text(found: Any, sent: str) -> bool:
    return isinstance(found, str) and " ".join(found.split()) == " ".join(sent.split())


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def reply_route(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Twitter route for an agent's reply, which carries the inbox's neutral payload.

    The reply answers in the room the customer chose: a public mention publicly, in reply to
    that tweet; anything else by DM to the identity the inbox chose.
    """
    route = dict(payload)
    target = payload.get("in_reply_to_external_id")
    if payload.get("visibility") == "public" and target:
        route.update(mode="tweet", in_reply_to_tweet_id=str(target))
    else:
        route["mode"] = "dm"
    return route
