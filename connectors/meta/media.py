"""Media of stored Meta messages, fetched after Meta got its 200; and the connector's status.

Meta answers a webhook only after we stored it, and waits for no download: WhatsApp sends a
media id (its URL is looked up with the token, then fetched with the token), Messenger and
Instagram a CDN URL. Both stay valid for a while, so fetching after the 200 loses nothing. A
failed download is tried again on the next pass, up to `media_attempts`, then noted on the
message, which keeps its "[image]" line either way.

This is the connector's supervised task, `meta` in `parity connectors status`: each pass it
also checks the tokens (at most every `TOKEN_CHECK_S`), applies any stored delivery report
the webhook did not get to, and counts the outbox per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, select, update

from connectors.base import ConnectorHealth
from connectors.media import MediaFile, attach, extension, media_due, note_failure
from connectors.meta.graph import RATE_LIMITS, Graph, GraphError
from connectors.meta.parse import iter_media
from connectors.meta.settings import MetaSettings
from connectors.meta.status import WebhookStats, apply_reports
from connectors.reports import MAX_REPORTS
from inbox.channels import IDENTITY_KIND_OF, channels_of
from inbox.db import read, write
from inbox.models import Identity, Message, utcnow

log = logging.getLogger(__name__)

TOKEN_CHECK_S = 600.0


def token_check(graph: Graph, path: str) -> tuple[bool, str | None]:
    """Whether Meta accepts the token: `/me` for a page token, the phone number id for
    WhatsApp's. (False, why) when it does not, or when Meta cannot be asked."""
    try:
        graph.get(path)
    except GraphError as exc:
        return False, str(exc)
    return True, None


class MetaMedia:
    # The Meta connector's supervised task: status reports it under the connector's name.
    name = "meta"

    def __init__(
        self,
        engine: Engine,
        settings: MetaSettings,
        graphs: dict[str, Graph],
        *,
        health: ConnectorHealth | None = None,
        stats: WebhookStats | None = None,
        poll_seconds: float = 10.0,
    ) -> None:
        self.engine = engine
        self.settings = settings
        # channel -> the Graph client with that channel's token.
        self.graphs = graphs
        self.health = health or ConnectorHealth()
        self.stats = stats or WebhookStats(self.health)
        self.poll_seconds = poll_seconds
        self._checked_at = -1e9

    def pending(self, now: datetime | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        with read(self.engine) as conn:
            found = [
                (row.id, row.channel, dict(row.meta or {}))
                for row in conn.execute(
                    select(Message.id, Message.channel, Message.meta)
                    .where(
                        Message.channel.in_(channels_of("meta")),
                        Message.dedup_key.like("meta:%"),
                    )
                    .order_by(Message.id.desc())
                    .limit(200)
                )
            ]
            conn.rollback()
        return [
            (mid, channel, meta)
            for mid, channel, meta in found
            if any(True for _ in iter_media(meta))
            and not meta["meta"].get("media_fetched")
            and media_due(meta["meta"], now or utcnow())
        ]

    def download(self, channel: str, media: dict[str, Any]) -> tuple[str, bytes, str]:
        """(content type, bytes, file name) of one media item."""
        graph = self.graphs[channel]
        limit = self.settings.media_max_bytes
        if channel == "whatsapp":
            found = graph.get(str(media.get("id", "")))
            url = str(found.get("url") or "")
            if not url:
                raise GraphError(200, None, None, "media lookup gave no url")
            kind, data = graph.download(url, limit)
        else:
            url = str(media.get("url") or "")
            if urlsplit(url).scheme != "https":
                raise GraphError(0, None, None, "attachment URL is not https")
            # A CDN URL from the webhook: fetched without our token, which is only for Meta.
            kind, data = Graph(self.settings, _NO_TOKEN).download(url, limit)
        name = str(media.get("filename") or "") or "media" + extension(kind)
        return kind, data, name

    def fetch_once(self, now: datetime | None = None) -> int:
        """Fetch the media of every message still missing them and due (a failed one waits
        its backoff, connectors/media.py); the number of attachments stored."""
        stored = 0
        now = now or utcnow()
        for message_id, channel, meta in self.pending(now):
            try:
                files = [MediaFile(*self.download(channel, m)) for m in iter_media(meta)]
            except GraphError as exc:
                attempts = self.settings.media_attempts
                note_failure(
                    self.engine, message_id, meta, "meta", str(exc), max_attempts=attempts, now=now
                )
                self.health.error(f"message {message_id}: media: {exc}")
                continue
            stored += attach(self.engine, message_id, "meta", files)
            self.health.success()
        return stored

    def profiles_once(self, limit: int = 50) -> int:
        """The name of each new Messenger or Instagram sender, asked once and kept: Meta's
        webhooks carry only the scoped id. Returns how many identities were looked up."""
        kind_channel = {IDENTITY_KIND_OF[c]: c for c in self.graphs if c != "whatsapp"}
        if not kind_channel:
            return 0
        with read(self.engine) as conn:
            rows = conn.execute(
                select(Identity.id, Identity.kind, Identity.handle, Identity.facts)
                .where(Identity.kind.in_(list(kind_channel)), Identity.display_name == "")
                .order_by(Identity.id.desc())
                .limit(limit)
            ).all()
            conn.rollback()
        looked = 0
        for row in rows:
            facts = dict(row.facts or {})
            if facts.get("profile_checked_at"):
                continue  # asked once already; an agent may name them
            channel = kind_channel[row.kind]
            name = ""
            if not row.handle.isdigit():
                # Scoped ids are digits; anything else is not put into a Graph URL.
                facts["profile_error"] = "not a Meta scoped id"
            else:
                fields = "name" if channel == "messenger" else "name,username"
                try:
                    found = self.graphs[channel].get(row.handle, fields=fields)
                except GraphError as exc:
                    if exc.status == 0 or exc.status >= 500 or exc.code in RATE_LIMITS:
                        continue  # Meta away or busy: asked again on the next pass
                    facts["profile_error"] = str(exc)[:200]
                else:
                    name = str(found.get("name") or found.get("username") or "")[:250]
                    if found.get("username"):
                        facts["username"] = str(found["username"])[:100]
            facts["profile_checked_at"] = utcnow().isoformat()
            values: dict[str, Any] = {"facts": facts}
            if name:
                values["display_name"] = name
            with write(self.engine) as conn:
                conn.execute(update(Identity).where(Identity.id == row.id).values(**values))
            looked += 1
        return looked

    def check_tokens(self) -> None:
        done: set[int] = set()
        for channel, graph in self.graphs.items():
            if id(graph) in done:
                continue  # Messenger and Instagram share the page token
            done.add(id(graph))
            # A WhatsApp token is checked on the phone number id, a page token on /me.
            whatsapp = channel == "whatsapp"
            path = self.settings.whatsapp_phone_number_id if whatsapp else "me"
            ok, why = token_check(graph, path)
            which = "whatsapp" if whatsapp else "page"
            served = [c for c, g in self.graphs.items() if g is graph]
            self.stats.token(which, ok, why, served)

    def pass_once(self) -> int:
        now = time.monotonic()
        if now - self._checked_at >= TOKEN_CHECK_S:
            self._checked_at = now
            self.check_tokens()
        # Reports a crash left between the 200 and their application, or that a store
        # refusing writes kept the webhook from applying.
        while apply_reports(self.engine) >= MAX_REPORTS:
            pass
        self.stats.outbox(self.engine)
        self.stats.kept_unhandled(self.engine)
        self.profiles_once()
        return self.fetch_once()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.pass_once)
            except Exception as exc:  # the store or Meta away: try on the next pass
                log.warning("meta: %s", exc)
                self.health.error(str(exc)[:500])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)


class _NoToken:
    def reveal(self) -> str:
        return ""


_NO_TOKEN: Any = _NoToken()
