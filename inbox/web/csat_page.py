"""The public one-click rating page of a satisfaction survey (inbox/csat.py).

No login: the link's token (the survey's id and its HMAC under `[csat] secret_env`) is the
credential, checked on every request; a token that is not ours, or a survey that is not a
link survey, gets the same "not valid" page. Reading the page changes nothing (mail
scanners open links); a rating is one click on one of five buttons, a POST. Every POST draws
on a per-address token bucket in the store (the acknowledgements' and the contact form's
buckets), so a flood is refused with 429 and costs no write. The page has no script, its
one style block is allowed by its hash, forms post only to the page itself, and it shows
nothing of the case but its reference.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from html import escape
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy import Engine

from inbox import csat
from inbox.models import utcnow
from inbox.web.app import blocking, client_ip
from inbox.web.routes import Route, add_routes

# (client address, now) -> None when a request may go, else why not. The composition root
# gives the stored token buckets every instance shares (normalizer.ack_limits).
Limiter = Callable[[str, datetime], str | None]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;"
    "color:#1b1b1b}h1{font-size:1.4rem}.ratings{display:flex;flex-wrap:wrap;gap:.5rem}"
    ".ratings button{font-size:1rem;padding:.6rem .8rem;border:1px solid #888;"
    "border-radius:.4rem;background:#f4f4f4;cursor:pointer}.ratings button.chosen"
    "{background:#cde8cd}textarea{width:100%;min-height:6rem;box-sizing:border-box}"
    ".small{margin-top:2rem;font-size:.9rem}.small button{background:none;border:0;"
    "color:#225;text-decoration:underline;padding:0;cursor:pointer}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# The most of a POST we read: a comment and a rating.
MAX_POST = 16 * 1024

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("inbox.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


class RatingPage:
    def __init__(
        self,
        engine: Engine,
        settings: csat.CsatSettings,
        secret: bytes | None,
        limiter: Limiter,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.secret = secret
        self.limiter = limiter

    def routes(self) -> list[Route]:
        def route(method: str, path: str, handler: Any, summary: str) -> Route:
            # "signature": anyone may call it; the handler checks the link's signed token.
            return Route(
                method, path, handler, summary, "csat", auth="signature", kind="html",
                in_openapi=False,
            )  # fmt: skip

        return [
            route("GET", "/csat/{token}", self.get, "A satisfaction survey's rating page"),
            route("POST", "/csat/{token}", self.post, "Rate a case 1-5, with an optional comment"),
            route("POST", "/csat/{token}/opt-out", self.post_opt_out, "Never be surveyed again"),
        ]

    # --- helpers --------------------------------------------------------------------------

    def _page(self, status: int = 200, **values: Any) -> web.Response:
        words = self.settings.words()
        defaults: dict[str, Any] = {
            "words": words,
            "style": _STYLE,
            "survey": None,
            "message": "",
            "token": "",
            "question": "",
            "chosen": None,
            "comment_saved": False,
        }
        html = _ENV.get_template("csat.html").render(**{**defaults, **values})
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def _survey(self, request: web.Request) -> csat.SurveyView | None:
        token = request.match_info["token"]
        survey_id = csat.verify(self.secret, token) if self.secret else None
        if survey_id is None:
            return None
        return await blocking(csat.view, self.engine, survey_id, self.settings.answer_days)

    def _unknown(self) -> web.Response:
        return self._page(404, message=self.settings.words().page_unknown)

    async def _limited(self, request: web.Request) -> bool:
        return await blocking(self.limiter, client_ip(request), utcnow()) is not None

    def _shown(self, survey: csat.SurveyView, token: str, **values: Any) -> web.Response:
        words = self.settings.words()
        return self._page(
            survey=survey,
            token=token,
            question=words.page_question.format(reference=survey.reference),
            **values,
        )

    # --- handlers -------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        survey = await self._survey(request)
        if survey is None:
            return self._unknown()
        words = self.settings.words()
        if survey.opted_out:
            return self._page(message=words.page_opted_out)
        if not survey.open:
            return self._page(message=words.page_closed)
        return self._shown(survey, request.match_info["token"], chosen=survey.rating)

    async def post(self, request: web.Request) -> web.StreamResponse:
        if await self._limited(request):
            return self._page(429, message=self.settings.words().page_busy)
        survey = await self._survey(request)
        if survey is None:
            return self._unknown()
        words = self.settings.words()
        if not survey.open or survey.opted_out:
            return self._page(409, message=words.page_closed)
        if (request.content_length or 0) > MAX_POST:
            return self._page(413, message=words.page_unknown)
        form = await request.post()
        raw_rating = str(form.get("rating", ""))
        if not raw_rating.isdigit() or int(raw_rating) not in csat.RATINGS:
            return self._page(400, message=words.page_unknown)
        rating = int(raw_rating)
        comment_field = form.get("comment")
        comment = csat.clean_comment(str(comment_field)) if comment_field is not None else None
        recorded = await blocking(
            csat.record_rating,
            self.engine,
            survey.id,
            rating,
            comment or None,
            self.settings.answer_days,
        )
        if not recorded:
            return self._page(409, message=words.page_closed)
        token = request.match_info["token"]
        return self._shown(
            survey,
            token,
            chosen=rating,
            message=words.page_thanks.format(rating=rating),
            comment_saved=bool(comment),
        )

    async def post_opt_out(self, request: web.Request) -> web.StreamResponse:
        if await self._limited(request):
            return self._page(429, message=self.settings.words().page_busy)
        survey = await self._survey(request)
        if survey is None:
            return self._unknown()
        await blocking(csat.opt_out_by_survey, self.engine, survey.id)
        return self._page(message=self.settings.words().page_opted_out)


def install(
    app: web.Application,
    engine: Engine,
    settings: csat.CsatSettings,
    secret: bytes | None,
    limiter: Limiter,
) -> None:
    """Add the rating page's routes to the inbox app's table."""
    add_routes(app, RatingPage(engine, settings, secret, limiter).routes())


def _seconds(value: Any) -> str:
    return "-" if value is None else str(round(value))


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}%"


def csat_table(by_channel: Mapping[str, Mapping[str, Any]]) -> str:
    """The manager page's "speed and satisfaction" table: per channel, the median first
    response next to the CSAT score and the survey response rate (report.add_csat)."""
    if not by_channel:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name)}</td>"
        f"<td>{_seconds(e['first_response_p50_s'])}</td>"
        f"<td>{_pct(e['csat_pct'])}</td><td>{e['answered']} / {e['asked']}</td>"
        f"<td>{_pct(e['response_rate_pct'])}</td></tr>"
        for name, e in by_channel.items()
    )
    return (
        "<h2>Speed and satisfaction per channel</h2>"
        '<table id="csat"><tr><th>channel</th><th>first response p50 (s)</th><th>CSAT</th>'
        f"<th>answered / asked</th><th>response rate</th></tr>{rows}</table>"
    )
