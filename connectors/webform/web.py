"""The contact form and the status page on the HTTP listener: thin handlers over the pure
parts (abuse.py, form.py, status.py) and intake.

Store, then answer: a form post is stored durably through intake (the same IntakeWriter as
every connector) before the person is told anything; the case is opened by the normalizer,
and the answer page shows its reference as soon as it exists.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import BodyPartReader, web
from sqlalchemy import Engine

from connectors.base import ConnectorHealth
from connectors.webform import abuse, limits
from connectors.webform.confirm import Confirmations, claims_of
from connectors.webform.form import (
    Checked,
    Limits,
    Upload,
    check_followup,
    check_form,
    human_size,
)
from connectors.webform.parse import source_key
from connectors.webform.settings import WebformSettings
from connectors.webform.status import StatusView, case_of_submission, find
from connectors.webform.text import TEXT, t
from inbox import i18n
from inbox.config import SlaSettings
from inbox.display import strip_bidi
from inbox.models import utcnow
from inbox.secrets import Secret
from inbox.web.routes import Auth, Route
from normalizer.acks import describe_eta, status_url
from normalizer.intake import RawInput, Stored

log = logging.getLogger(__name__)

CONNECTOR = "webform"
CHANNEL = "web"
Submit = Callable[[RawInput], Awaitable[Stored]]
# Our own files only, no inline script or style, forms post only to us.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
ASSETS = {"contact.js": "text/javascript", "contact.css": "text/css"}
# Text fields of a post, and the most of any one we read (the text has its own limit).
FIELD_BYTES = 4096
POLL_SECONDS = 0.1
# Posts whose bodies are read at once: each may hold up to the attachments' limits in
# memory, so the listener's memory for the form is bounded by this many of them.
READING_AT_ONCE = 8
# Fields a form shown again does not keep as typed (the files must be chosen again too).
NOT_KEPT = frozenset({"form_token", "work", "website"})


def page_language(
    request: web.Request, fields: dict[str, str] | None = None, known: str | None = None
) -> str:
    """The language of the page answering `request`, made the current one for its text:
    the form's `lang` field or `?lang=`, else the browser's Accept-Language, else `known`
    (the case's language), else English."""
    chosen = (fields or {}).get("lang") or request.query.get("lang")
    lang = i18n.choose(chosen, request.headers.get("Accept-Language"), known)
    i18n.current.set(lang)
    return lang


def _shown(value: Any) -> Any:
    return strip_bidi(value) if isinstance(value, str) else value


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("connectors.webform", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    finalize=_shown,
)
_ENV.globals["t"] = t
_ENV.globals["TEXT"] = TEXT


class TooLarge(Exception):
    pass


class WebForm:
    """The routes of the form and the status page, sharing the settings, secret and store."""

    def __init__(
        self,
        settings: WebformSettings,
        engine: Engine,
        secret: Secret,
        submit: Submit,
        *,
        sla: SlaSettings | None = None,
        reopen_window_days: int = 14,
        health: ConnectorHealth | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.secret = secret.reveal().encode()
        self.submit = submit
        self.sla = sla or SlaSettings()
        self.reopen_days = reopen_window_days
        self.health = health or ConnectorHealth()
        self.base = settings.public_url.rstrip("/")
        self.confirmations = Confirmations(settings, engine, self.secret)
        self.buckets = limits.BucketTaker(engine)
        self.reading = asyncio.Semaphore(READING_AT_ONCE)
        self.counts: dict[str, int] = {}

    # --- helpers --------------------------------------------------------------------------

    def _limits(self) -> Limits:
        return Limits(
            max_text=self.settings.max_text_chars,
            max_files=self.settings.max_attachments,
            max_file_bytes=self.settings.max_attachment_bytes,
            types=self.settings.attachment_types,
        )

    def _form_token(self, fields: dict[str, str], now: datetime) -> abuse.FormToken:
        """The posted form token's facts, the form's and the status page's alike; raises
        abuse.TokenError when it is not ours or too old."""
        return abuse.check(
            self.secret,
            fields.get("form_token", ""),
            now.timestamp(),
            self.settings.token_max_age_minutes * 60,
        )

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.health.details["counts"] = dict(self.counts)

    @staticmethod
    def _page(name: str, status: int = 200, **values: Any) -> web.Response:
        lang = i18n.current.get()
        values.setdefault("switch", {})
        html = _ENV.get_template(name).render(lang=lang, names=i18n.LANGUAGE_NAMES, **values)
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "Content-Language": lang,
                # The page's words follow these request headers: a cache must key on them.
                "Vary": "Accept-Language",
            },
        )

    @staticmethod
    def _address(request: web.Request) -> str:
        from inbox.web.app import client_ip

        return client_ip(request)

    def eta_words(self, due: datetime, now: datetime) -> str:
        return describe_eta(now, due, self.sla.business_hours.timezone, i18n.current.get())

    def status_url(self, reference: str, token: str) -> str:
        # The one definition, shared with the acknowledgements' {status_url}.
        return status_url(self.base, reference, token)

    def bits_now(self, now: datetime) -> int:
        """The proof-of-work difficulty for a form served now (see abuse.difficulty)."""
        bucket = limits.global_bucket(self.settings)
        level = limits.level(self.engine, bucket, now)
        return abuse.difficulty(
            self.settings.pow_bits, self.settings.pow_max_bits, level, bucket.burst
        )

    def routes(self) -> list[Route]:
        def route(
            method: str, path: str, handler: Any, summary: str, auth: Auth = "signature"
        ) -> Route:
            # "signature": anyone may call it and it checks its own credential (the form's
            # token, a status link's token, a confirmation key, an answer page's key);
            # "public": it shows no customer data at all.
            return Route(
                method, path, handler, summary, "webform", auth=auth, kind="html",
                in_openapi=False,
            )  # fmt: skip

        return [
            route("GET", "/contact", self.get_form, "The public contact form", "public"),
            route(
                "POST", "/contact", self.post_form, "Send the contact form (stored, then answered)"
            ),
            route("GET", "/contact/received/{sid}", self.received, "A form post's answer page"),
            route(
                "GET",
                "/contact/assets/{name}",
                self.asset,
                "The form's script and stylesheet",
                "public",
            ),
            route("GET", "/contact/confirm", self.confirm_page, "Confirm an address or number"),
            route("POST", "/contact/confirm", self.confirm_post, "Confirm an address or number"),
            route("GET", "/status/{reference}", self.status_page, "A case's status page"),
            route(
                "POST",
                "/status/{reference}",
                self.status_post,
                "Add to a case from its status page",
            ),
        ]

    # --- the form -------------------------------------------------------------------------

    def _form_values(self, now: datetime) -> dict[str, Any]:
        bits = self.bits_now(now)
        return {
            "token": abuse.mint(self.secret, now.timestamp(), bits),
            "bits": bits,
            "max_files": self.settings.max_attachments,
            "max_size": human_size(self.settings.max_attachment_bytes),
            "max_text": self.settings.max_text_chars,
            "accept": ",".join(self.settings.attachment_types),
        }

    async def get_form(self, request: web.Request) -> web.StreamResponse:
        page_language(request)
        values = await asyncio.to_thread(self._form_values, utcnow())
        return self._page("contact.html", **values, errors={}, typed={}, switch=_switch("/contact"))

    async def _form_again(
        self, status: int, errors: dict[str, str], typed: dict[str, str]
    ) -> web.Response:
        values = await asyncio.to_thread(self._form_values, utcnow())
        return self._page(
            "contact.html", status, **values, errors=errors, typed=typed, switch=_switch("/contact")
        )

    def _max_body(self) -> int:
        s = self.settings
        return s.max_attachments * s.max_attachment_bytes + s.max_text_chars * 4 + 64 * 1024

    async def _read_post(self, request: web.Request) -> tuple[dict[str, str], list[Upload]]:
        """The post's text fields and files, every part bounded, a few posts at a time;
        raises TooLarge."""
        async with self.reading:
            return await self._read_bounded_post(request)

    async def _read_bounded_post(self, request: web.Request) -> tuple[dict[str, str], list[Upload]]:
        limit = self._max_body()
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge()
        fields: dict[str, str] = {}
        uploads: list[Upload] = []
        if request.content_type == "application/x-www-form-urlencoded":
            raw = await request.content.read(limit + 1)
            if len(raw) > limit:
                raise TooLarge()
            from urllib.parse import parse_qsl

            for key, value in parse_qsl(raw.decode("utf-8", "replace"), max_num_fields=50):
                fields.setdefault(key, value)
            return fields, uploads
        if request.content_type != "multipart/form-data":
            return fields, uploads
        reader = await request.multipart()
        total = 0
        parts = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > 60 or not isinstance(part, BodyPartReader):
                raise TooLarge()
            name = part.name or ""
            if part.filename is not None:
                cap = self.settings.max_attachment_bytes + 1
                data = await _read_bounded(part, cap)
                total += len(data)
                if len(uploads) <= self.settings.max_attachments:
                    uploads.append(
                        Upload(
                            part.filename[:500], part.headers.get("Content-Type", "")[:100], data
                        )
                    )
            else:
                cap = (
                    self.settings.max_text_chars * 4 if name in ("text", "message") else FIELD_BYTES
                )
                data = await _read_bounded(part, cap + 1)
                total += len(data)
                if name not in fields:
                    fields[name] = data[:cap].decode("utf-8", "replace")
            if total > limit:
                raise TooLarge()
        return fields, uploads

    async def post_form(self, request: web.Request) -> web.StreamResponse:
        now = utcnow()
        page_language(request)
        try:
            fields, uploads = await self._read_post(request)
        except TooLarge:
            self._count("too_large")
            return self._page(
                "message.html",
                413,
                title=t("form_title"),
                text=t("err_too_large", size=human_size(self.settings.max_attachment_bytes)),
            )
        lang = page_language(request, fields)
        typed = {k: v[:FIELD_BYTES] for k, v in fields.items() if k not in NOT_KEPT}
        try:
            token = self._form_token(fields, now)
        except abuse.TokenError as exc:
            self._count("bad_token")
            return await self._form_again(403, {"form": t(exc.key)}, typed)
        if fields.get("website", ""):
            # The honeypot: hidden from people (and from screen readers), filled by robots.
            self._count("honeypot")
            log.info("contact form: honeypot field filled; refused")
            return await self._form_again(400, {"form": t("trap") + "."}, typed)
        nonce = fields.get("work", "")
        js = bool(nonce)
        if js:
            if not abuse.work_ok(token.raw, nonce, token.bits):
                self._count("bad_work")
                return await self._form_again(400, {"form": t("err_work")}, typed)
        else:
            try:  # no script, no work: at least not faster than a person
                abuse.check(
                    self.secret,
                    token.raw,
                    now.timestamp(),
                    self.settings.token_max_age_minutes * 60,
                    self.settings.nojs_min_fill_seconds,
                )
            except abuse.TokenError as exc:
                self._count("too_fast")
                return await self._form_again(400, {"form": t(exc.key)}, typed)
        checked = check_form(
            name=fields.get("name", ""),
            email=fields.get("email", ""),
            phone=fields.get("phone", ""),
            text=fields.get("text", ""),
            uploads=uploads,
            limits=self._limits(),
        )
        if checked.errors:
            self._count("invalid")
            return await self._form_again(400, checked.errors, typed)
        buckets = limits.form_buckets(self.settings, self._address(request), js)
        sid = abuse.submission_id(self.secret, token.raw)
        key = source_key("form", token.raw)
        # The rate limits are taken in the transaction that stores the post: a token is
        # spent if and only if the post is stored, and one commit does both.
        stored = await self.submit(
            RawInput(
                connector=CONNECTOR,
                channel=CHANNEL,
                source_key=key,
                payload=payload("form", sid, checked, work="js" if js else "nojs", lang=lang),
                envelope={"key": key, "kind": "form", "address": "contact-form"},
                received_at=now,
                on_first_store=self.confirmations.pending(sid, checked, now),
                admit=partial(limits.take_in, buckets=buckets, now=now),
            )
        )
        if stored.refused is not None:
            self._count(f"rate_limited_{stored.refused}")
            return self._page("message.html", 429, title=t("form_title"), text=t("err_busy"))
        self._count("stored")
        target = f"/contact/received/{sid}?" + urlencode(
            {"k": abuse.received_key(self.secret, sid), "lang": lang}
        )
        raise web.HTTPSeeOther(target)

    async def received(self, request: web.Request) -> web.StreamResponse:
        lang = page_language(request)
        sid = request.match_info["sid"][:64]
        if not abuse.same(request.query.get("k", ""), abuse.received_key(self.secret, sid)):
            return self._not_found()
        deadline = time.monotonic() + self.settings.wait_seconds
        found = await asyncio.to_thread(case_of_submission, self.engine, sid)
        while found is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            found = await asyncio.to_thread(case_of_submission, self.engine, sid)
        if found is None:
            # The normalizer has not opened the case yet: this page asks again by itself
            # (meta refresh, no script needed).
            return self._page("received.html", refresh=2)
        reference, token, due = found
        now = utcnow()
        claims = await asyncio.to_thread(self.confirmations.claimed, sid)
        return self._page(
            "done.html",
            reference=reference,
            eta=self.eta_words(due, now),
            late=t("late", eta=_when(due, self.sla.business_hours.timezone)) if due <= now else "",
            status_url=_with_lang(self.status_url(reference, token), lang),
            claims=claims,
        )

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        data = (resources.files("connectors.webform") / "static" / name).read_bytes()
        return web.Response(
            body=data, content_type=ASSETS[name], headers={"Cache-Control": "max-age=300"}
        )

    # --- the status page ------------------------------------------------------------------

    def _not_found(self) -> web.Response:
        return self._page("message.html", 404, title=t("not_found_title"), text=t("not_found"))

    async def _view(self, request: web.Request) -> StatusView | web.Response:
        now = utcnow()
        refused = await self.buckets.take(
            limits.status_buckets(self.settings, self._address(request)), now
        )
        if refused is not None:
            self._count("status_rate_limited")
            return self._page("message.html", 429, title=t("not_found_title"), text=t("slow_down"))
        reference = request.match_info["reference"][:32]
        token = request.query.get("t", "")[:64]
        view = await asyncio.to_thread(find, self.engine, reference, token, now, self.reopen_days)
        if view is None:
            self._count("status_not_found")
            return self._not_found()
        return view

    async def status_page(self, request: web.Request) -> web.StreamResponse:
        page_language(request)
        found = await self._view(request)
        if isinstance(found, web.Response):
            return found
        page_language(request, known=found.language)
        return self._status(
            found, request.query.get("t", ""), added=request.query.get("added") == "1"
        )

    def _status(
        self,
        view: StatusView,
        token: str,
        *,
        added: bool = False,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> web.Response:
        now = utcnow()
        reopenable = view.resolved and view.reopen_until is not None and view.reopen_until > now
        return self._page(
            "status.html",
            status,
            view=view,
            token=token,
            form_token=abuse.mint(self.secret, now.timestamp(), 0),
            eta=self.eta_words(view.due_at, now)
            if view.due_at is not None and not view.late
            else "",
            due_words=_when(view.due_at, self.sla.business_hours.timezone) if view.due_at else "",
            last_in=_when(view.last_in, self.sla.business_hours.timezone),
            last_out=_when(view.last_out, self.sla.business_hours.timezone),
            when=lambda at: _when(at, self.sla.business_hours.timezone),
            reopenable=reopenable,
            reopen_until=_when(view.reopen_until, self.sla.business_hours.timezone),
            can_write=not view.resolved or reopenable,
            added=added,
            errors=errors or {},
            max_files=self.settings.max_attachments,
            max_size=human_size(self.settings.max_attachment_bytes),
            accept=",".join(self.settings.attachment_types),
            action=f"/status/{quote(view.reference)}?"
            + urlencode({"t": token, "lang": i18n.current.get()}),
            switch=_switch(f"/status/{quote(view.reference)}", t=token),
        )

    async def status_post(self, request: web.Request) -> web.StreamResponse:
        page_language(request)
        found = await self._view(request)
        if isinstance(found, web.Response):
            return found
        view = found
        lang = page_language(request, known=view.language)
        token = request.query.get("t", "")
        now = utcnow()
        try:
            fields, uploads = await self._read_post(request)
        except TooLarge:
            return self._status(
                view,
                token,
                errors={
                    "files": t("err_too_large", size=human_size(self.settings.max_attachment_bytes))
                },
                status=413,
            )
        try:
            form_token = self._form_token(fields, now)
        except abuse.TokenError as exc:
            return self._status(view, token, errors={"text": t(exc.key)}, status=403)
        if view.resolved and (view.reopen_until is None or view.reopen_until <= now):
            return self._status(view, token, errors={"text": t("closed_hint")}, status=409)
        checked = check_followup(
            text=fields.get("text", ""),
            uploads=uploads,
            limits=self._limits(),
        )
        if checked.errors:
            return self._status(view, token, errors=checked.errors, status=400)
        sid = view.opener_handle or abuse.followup_id(self.secret, view.reference)
        key = source_key("followup", form_token.raw)
        from inbox.references import case_tag

        body = Checked(name="", text=checked.text, files=checked.files)
        await self.submit(
            RawInput(
                connector=CONNECTOR,
                channel=CHANNEL,
                source_key=key,
                payload=payload("followup", sid, body, tag=case_tag(view.reference, token)),
                envelope={"key": key, "kind": "followup", "address": "status-page"},
                received_at=now,
            )
        )
        self._count("followup_stored")
        raise web.HTTPSeeOther(
            f"/status/{quote(view.reference)}?"
            + urlencode({"t": token, "added": "1", "lang": lang})
        )

    # --- confirmation -----------------------------------------------------------------------

    async def confirm_page(self, request: web.Request) -> web.StreamResponse:
        page_language(request)
        q = request.query
        ok = await asyncio.to_thread(
            self.confirmations.valid, q.get("s", ""), q.get("h", ""), q.get("c", ""), utcnow()
        )
        if not ok:
            return self._page("message.html", 404, title=t("confirm_title"), text=t("confirm_bad"))
        # A GET never confirms: mail scanners open links. The person presses the button.
        return self._page(
            "confirm.html",
            sid=q.get("s", ""),
            handle=q.get("h", ""),
            code=q.get("c", ""),
            form_token=abuse.mint(self.secret, utcnow().timestamp(), 0),
            errors={},
        )

    async def confirm_post(self, request: web.Request) -> web.StreamResponse:
        now = utcnow()
        page_language(request)
        fields, _ = await self._read_post(request)
        page_language(request, fields)
        try:
            abuse.check(
                self.secret,
                fields.get("form_token", ""),
                now.timestamp(),
                self.settings.token_max_age_minutes * 60,
            )
        except abuse.TokenError as exc:
            return self._page("message.html", 403, title=t("confirm_title"), text=t(exc.key))
        refused = await self.buckets.take(
            limits.status_buckets(self.settings, self._address(request)), now
        )
        if refused is not None:
            return self._page("message.html", 429, title=t("confirm_title"), text=t("slow_down"))
        handle = fields.get("handle", "")[:320]
        done = await asyncio.to_thread(
            self.confirmations.confirm,
            fields.get("sid", "")[:64],
            handle,
            fields.get("code", "")[:64],
            now,
        )
        if not done:
            self._count("confirm_bad")
            return self._page("message.html", 400, title=t("confirm_title"), text=t("confirm_bad"))
        self._count("confirmed")
        return self._page(
            "message.html", 200, title=t("confirm_title"), text=t("confirmed", where=handle)
        )


def _when(at: datetime | None, timezone: str) -> str:
    if at is None:
        return t("never")
    from zoneinfo import ZoneInfo

    local = at.astimezone(ZoneInfo(timezone))
    lang = i18n.current.get()
    pattern = i18n.gettext_in(lang, "EEEE d MMMM yyyy, HH:mm")
    return i18n.format_when(local, lang, pattern) + f" ({timezone})"


def _switch(path: str, **query: str) -> dict[str, str]:
    """The language selector's links: this page in each language, no script needed."""
    return {lang: f"{path}?" + urlencode({**query, "lang": lang}) for lang in i18n.LANGUAGES}


def _with_lang(url: str, lang: str) -> str:
    """A status link that opens in the language the person chose (English needs no
    parameter: it is what the page falls back to)."""
    if not url or lang == i18n.DEFAULT:
        return url
    return url + "&" + urlencode({"lang": lang})


async def _read_bounded(part: BodyPartReader, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            # Read no further: the caller sees more than it allows and refuses the file.
            chunks.append(chunk)
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def payload(
    kind: str, sid: str, checked: Checked, *, work: str = "", tag: str = "", lang: str = ""
) -> bytes:
    """The document stored for a form post or a follow-up (connectors/webform/parse.py)."""
    doc: dict[str, Any] = {
        "v": 1,
        "kind": kind,
        "sid": sid,
        "name": checked.name,
        "claims": claims_of(checked),
        "text": checked.text,
        "work": work,
        "attachments": [
            {"filename": f, "content_type": c, "data": base64.b64encode(d).decode("ascii")}
            for f, c, d in checked.files
        ],
    }
    if tag:
        doc["tag"] = tag
    if lang:
        # The language the person chose on the form: the case's, no detection needed.
        doc["lang"] = lang
    return json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
