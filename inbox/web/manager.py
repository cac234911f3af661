"""The manager audit: the report page (server-side SVG charts), its API and the audit log.

Self-contained: `install(app, settings)` adds these routes to the app's one route table, so
authentication, roles (manager and up) and the OpenAPI document come from there. The page
runs no script; its only inline style is allowed by hash in its own CSP.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import time
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import Engine

from inbox import audit, csat, report, report_rows
from inbox.db import write
from inbox.models import utcnow
from inbox.report import AuditSettings
from inbox.web.app import blocking, context, error, reply_json
from inbox.web.csat_page import csat_table
from inbox.web.routes import Param, Route, add_routes

AUDIT_SETTINGS = web.AppKey("parity.audit_settings", AuditSettings)
LOG_COLUMNS = ("id", "at", "actor", "action", "case", "before", "after", "hmac")


def _settings(request: web.Request) -> AuditSettings:
    return request.app.get(AUDIT_SETTINGS) or AuditSettings()


def _period(request: web.Request) -> tuple[datetime, datetime, datetime]:
    now = utcnow()
    query = request.rel_url.query
    default = f"{_settings(request).default_period_days}d"
    try:
        since = report.parse_since(query.get("since") or default, now)
        until = report.parse_since(query["until"], now) if query.get("until") else now
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    return now, since, until


def compute(
    engine: Engine, now: datetime, since: datetime, until: datetime, threshold: float
) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = report_rows.fetch(conn, since, until)
    data = report.build(rows, now=now, since=since, until=until, threshold=threshold)
    return report.add_csat(data, csat.csat_by(engine, "channel", since, until))


# Health probes come every few seconds; the report over a period is not that cheap, and a
# parity figure a minute old is as true: one cached answer per engine.
_HEALTH_TTL_S = 60.0
_health_cache: dict[int, tuple[float, dict[str, Any]]] = {}


def parity_health(engine: Engine, settings: AuditSettings) -> dict[str, Any]:
    """The /healthz field: the ratio and whether it breaches; no customer data."""
    cached = _health_cache.get(id(engine))
    if cached is not None and time.monotonic() - cached[0] < _HEALTH_TTL_S:
        return cached[1]
    now = utcnow()
    since = report.parse_since(f"{settings.default_period_days}d", now)
    data = compute(engine, now, since, now, settings.parity_ratio_threshold)
    result = {
        "ratio": data["parity_ratio"],
        "threshold": data["parity_ratio_threshold"],
        "breach": data["parity_breach"],
        "period_days": settings.default_period_days,
    }
    _health_cache[id(engine)] = (time.monotonic(), result)
    return result


async def report_api(request: web.Request) -> web.StreamResponse:
    now, since, until = _period(request)
    data = await blocking(
        compute,
        context(request).engine,
        now,
        since,
        until,
        _settings(request).parity_ratio_threshold,
    )
    if request.rel_url.query.get("format") == "csv":
        return _download(report.to_csv(data), "parity-audit-report.csv", "text/csv")
    return reply_json(data)


def _cases(
    engine: Engine, now: datetime, since: datetime, until: datetime, **filters: Any
) -> list[str]:
    with engine.connect() as conn:
        rows = report_rows.fetch(conn, since, until)
    return report.select_cases(rows, now=now, **filters)


async def cases_api(request: web.Request) -> web.StreamResponse:
    now, since, until = _period(request)
    query = request.rel_url.query
    try:
        bucket = int(query["bucket"]) if query.get("bucket") else None
    except ValueError:
        return error(400, "bucket is a whole number")
    try:
        refs = await blocking(
            _cases,
            context(request).engine,
            now,
            since,
            until,
            channel=query.get("channel") or None,
            side=query.get("side") or None,
            bucket=bucket,
            week=query.get("week") or None,
            which=query.get("which") or "all",
        )
    except ValueError as exc:
        return error(400, str(exc))
    return reply_json({"count": len(refs), "references": refs})


def _parse_time(text: str | None, now: datetime) -> datetime | None:
    return report.parse_since(text, now) if text else None


async def log_api(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    now = utcnow()
    try:
        start = _parse_time(query.get("from"), now)
        end = _parse_time(query.get("to"), now)
        limit = min(100_000, max(1, int(query.get("limit", "1000"))))
    except ValueError as exc:
        return error(400, str(exc))
    with_engine = context(request).engine

    def fetch() -> list[dict[str, Any]]:
        with with_engine.connect() as conn:
            return report_rows.audit_entries(
                conn,
                actor=query.get("actor") or None,
                action=query.get("action") or None,
                reference=query.get("case") or None,
                start=start,
                end=end,
                limit=limit,
            )

    entries = await blocking(fetch)
    if query.get("format") == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LOG_COLUMNS)
        for e in entries:
            writer.writerow(
                [e[c] if c not in ("before", "after") else _json(e[c]) for c in LOG_COLUMNS]
            )
        return _download(out.getvalue(), "parity-audit-log.csv", "text/csv")
    return reply_json({"entries": entries})


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, default=str)


async def checkpoint_api(request: web.Request) -> web.StreamResponse:
    engine = context(request).engine

    def fetch() -> dict[str, Any]:
        with write(engine) as conn:  # seals first: a checkpoint covers every chain
            return audit.checkpoint(conn)

    data = await blocking(fetch)
    response = reply_json(data)
    response.headers["Content-Disposition"] = 'attachment; filename="parity-audit-checkpoint.json"'
    return response


def _download(text: str, filename: str, mime: str) -> web.Response:
    return web.Response(
        text=text,
        content_type=mime,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- the page ------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    ".breach{background:#fdd;border:2px solid #c00;padding:.5em;font-weight:bold}"
    ".ok{background:#dfd;border:1px solid #393;padding:.5em}"
    "svg{border:1px solid #ddd;margin:.5em 0}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _drill(params: dict[str, Any]) -> str:
    return "/api/audit/cases?" + urlencode({k: v for k, v in params.items() if v is not None})


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def histogram_svg(data: dict[str, Any], since: str) -> str:
    """Grouped bars: first responses per bucket, one colour per channel; each bar links to
    the cases behind it."""
    hist = data["histogram"]
    labels: list[str] = hist["buckets"]
    channels: dict[str, list[int]] = hist["channels"]
    width, height, left, bottom = 720, 260, 40, 40
    plot_w, plot_h = width - left - 10, height - bottom - 20
    peak = max([1, *(c for counts in channels.values() for c in counts)])
    group_w = plot_w / len(labels)
    bar_w = max(2.0, (group_w - 8) / max(1, len(channels)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="first response distribution per channel">',
        f'<line x1="{left}" y1="{20 + plot_h}" x2="{width - 10}" y2="{20 + plot_h}" '
        'stroke="#444"/>',
        f'<text x="4" y="16" font-size="11">{peak}</text>',
    ]
    for i, label in enumerate(labels):
        x0 = left + i * group_w
        parts.append(
            f'<text x="{x0 + group_w / 2:.1f}" y="{height - 22}" font-size="11" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
        for j, (name, counts) in enumerate(channels.items()):
            h = plot_h * counts[i] / peak
            x = x0 + 4 + j * bar_w
            href = escape(_drill({"since": since, "channel": name, "bucket": i}))
            parts.append(
                f'<a href="{href}"><rect x="{x:.1f}" y="{20 + plot_h - h:.1f}" '
                f'width="{bar_w - 1:.1f}" height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{escape(name)} {escape(label)}: {counts[i]}</title></rect></a>"
            )
    for j, name in enumerate(channels):
        x = left + j * 110
        parts.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def ratio_svg(data: dict[str, Any], since: str) -> str:
    """The parity ratio per week, with the threshold as a dashed red line."""
    weeks = [w for w in data["weeks"]]
    width, height, left, bottom = 720, 220, 40, 30
    plot_w, plot_h = width - left - 10, height - bottom - 20
    threshold = float(data["parity_ratio_threshold"])
    peak = max([threshold * 1.2, *(w["parity_ratio"] or 0 for w in weeks)])
    step = plot_w / max(1, len(weeks))

    def y(value: float) -> float:
        return 20 + plot_h - plot_h * value / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="parity ratio per week">',
        f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - 10}" y2="{y(0):.1f}" stroke="#444"/>',
        f'<line x1="{left}" y1="{y(threshold):.1f}" x2="{width - 10}" y2="{y(threshold):.1f}" '
        f'stroke="#c00" stroke-dasharray="4 3"/>',
        f'<text x="2" y="{y(threshold) + 4:.1f}" font-size="10" fill="#c00">{threshold:g}</text>',
        f'<text x="2" y="{y(1) + 4:.1f}" font-size="10">1</text>',
    ]
    points = []
    for i, week in enumerate(weeks):
        x = left + step * (i + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{height - 8}" font-size="10" text-anchor="middle">'
            f"{escape(week['week'][5:])}</text>"
        )
        if week["parity_ratio"] is None:
            continue
        yy = y(week["parity_ratio"])
        points.append(f"{x:.1f},{yy:.1f}")
        href = escape(_drill({"since": since, "week": week["week"]}))
        parts.append(
            f'<a href="{href}"><circle cx="{x:.1f}" cy="{yy:.1f}" r="5" fill="#1f77b4">'
            f"<title>week of {escape(week['week'])}: {week['parity_ratio']}</title></circle></a>"
        )
    if len(points) > 1:
        parts.insert(5, f'<polyline points="{" ".join(points)}" fill="none" stroke="#1f77b4"/>')
    parts.append("</svg>")
    return "".join(parts)


_TABLE = (
    ("volume", "all"),
    ("ack_coverage_pct", None),
    ("first_response_p50_s", "answered"),
    ("first_response_p90_s", "answered"),
    ("resolution_p50_s", "resolved"),
    ("resolution_p90_s", "resolved"),
    ("sla_attained_pct", "sla_missed"),
    ("open", "open"),
    ("oldest_open_age_s", "open"),
    ("unanswered", "unanswered"),
    ("oldest_unanswered_age_s", "unanswered"),
    ("followups_per_case", "followed_up"),
    ("promise_error_p50_s", "promise_broken"),
    ("promise_kept_pct", "promise_broken"),
)


def _table(groups: dict[str, dict[str, Any]], key: str, since: str) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c, _ in _TABLE)
    rows = []
    for name, stats in groups.items():
        cells = []
        for column, which in _TABLE:
            text = escape(_cell(stats[column]))
            if which is not None and stats["volume"]:
                href = escape(_drill({"since": since, key: name, "which": which}))
                text = f'<a href="{href}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>{escape(key)}</th>{head}</tr>{''.join(rows)}</table>"


def render(data: dict[str, Any], since_param: str) -> str:
    ratio = data["parity_ratio"]
    if data["parity_breach"]:
        banner = (
            f'<p class="breach">Parity breach: ratio {ratio} is above the threshold '
            f"{data['parity_ratio_threshold']} ({escape(str(data['parity_worst_channel']))} "
            f"vs {escape(str(data['parity_best_channel']))}).</p>"
        )
    else:
        banner = (
            f'<p class="ok">Parity ratio {_cell(ratio)} (threshold '
            f"{data['parity_ratio_threshold']}).</p>"
        )
    query = urlencode({"since": since_param})
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Parity: manager audit</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Manager audit: service per channel</h1>"
        f"<p>Cases first heard from {escape(data['since'][:19])} to "
        f"{escape(data['until'][:19])} UTC."
        " Times are seconds.</p>"
        '<form method="get" action="/manager/audit"><label>Period <input name="since" '
        f'value="{escape(since_param)}"></label> <button>Show</button></form>'
        f"{banner}"
        "<h2>First response per channel</h2>"
        f"{histogram_svg(data, since_param)}"
        "<h2>Parity ratio per week</h2>"
        f"{ratio_svg(data, since_param)}"
        "<h2>Channels</h2>"
        f"{_table(data['channels'], 'channel', since_param)}"
        "<h2>Public and private</h2>"
        f"{_table(data['sides'], 'side', since_param)}"
        f"{csat_table(data.get('csat', {}))}"
        f'<p>Export: <a href="/api/audit/report?{query}&amp;format=csv">CSV</a> · '
        f'<a href="/api/audit/report?{query}">JSON</a> · '
        '<a href="/api/audit/log?format=csv">audit log CSV</a> · '
        '<a href="/api/audit/log">audit log JSON</a> · '
        '<a href="/api/audit/checkpoint">checkpoint</a></p>'
        "</body></html>"
    )


async def page(request: web.Request) -> web.StreamResponse:
    now, since, until = _period(request)
    settings = _settings(request)
    data = await blocking(
        compute, context(request).engine, now, since, until, settings.parity_ratio_threshold
    )
    since_param = request.rel_url.query.get("since") or f"{settings.default_period_days}d"
    return web.Response(
        text=render(data, since_param),
        content_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP},
    )


_PERIOD_PARAMS = (
    Param("since", "30d, 12h, 2w or an ISO date (default: [audit] default_period_days)"),
    Param("until", "the period's end (default: now)"),
)


def routes() -> list[Route]:
    return [
        Route(
            "GET",
            "/manager/audit",
            page,
            "The manager audit page",
            "audit",
            role="manager",
            kind="html",
            query=_PERIOD_PARAMS,
        ),
        Route(
            "GET",
            "/api/audit/report",
            report_api,
            "The per-channel service report (JSON, or CSV with format=csv)",
            "audit",
            role="manager",
            query=(*_PERIOD_PARAMS, Param("format", "json (default) or csv")),
        ),
        Route(
            "GET",
            "/api/audit/cases",
            cases_api,
            "The case references behind one chart bucket or table cell",
            "audit",
            role="manager",
            query=(
                *_PERIOD_PARAMS,
                Param("channel", "only this channel"),
                Param("side", "public or private"),
                Param("bucket", "first-response histogram bucket index", "integer"),
                Param("week", "the Monday of a week, YYYY-MM-DD"),
                Param(
                    "which",
                    "all, open, unanswered, answered, resolved, sla_missed, "
                    "followed_up, promise_broken",
                ),
            ),
        ),
        Route(
            "GET",
            "/api/audit/log",
            log_api,
            "The audit log filtered, oldest first (JSON, or CSV with format=csv)",
            "audit",
            role="manager",
            query=(
                Param("actor", "only this actor"),
                Param("action", "only this action"),
                Param("case", "only this case's reference"),
                Param("from", "from this time (ISO, or 30d/12h/2w ago)"),
                Param("to", "before this time"),
                Param("limit", "at most this many rows (default 1000)", "integer"),
                Param("format", "json (default) or csv"),
            ),
        ),
        Route(
            "GET",
            "/api/audit/checkpoint",
            checkpoint_api,
            "Seal the audit chains and export the seal as a checkpoint",
            "audit",
            role="manager",
        ),
    ]


def install(app: web.Application, settings: AuditSettings | None = None) -> None:
    app[AUDIT_SETTINGS] = settings or AuditSettings()
    add_routes(app, routes())
