"""The manager audit: the report page (server-side SVG charts), its API and the audit log.

Self-contained: `install(app, settings)` adds these routes to the app's one route table, so
authentication, roles (manager and up) and the OpenAPI document come from there. The page
runs no script and has no inline style: it is an inbox page (base template, app.css, the
pages' CSP).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import Connection, Engine, select

from inbox import audit, casework, csat, queries, report, report_days, report_rows
from inbox.db import write
from inbox.models import Case, utcnow
from inbox.report import AuditSettings
from inbox.web import pages
from inbox.web.app import blocking, context, error, principal, reply_json
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
    engine: Engine,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str = "first_response",
) -> dict[str, Any]:
    with engine.connect() as conn:
        data = report_days.compute(
            conn, now=now, since=since, until=until, threshold=threshold, parity_on=parity_on
        )
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
    data = compute(engine, now, since, now, settings.parity_ratio_threshold, settings.parity_on)
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
        _settings(request).parity_on,
    )
    if request.rel_url.query.get("format") == "csv":
        return _download(report.to_csv(data), "parity-audit-report.csv", "text/csv")
    return reply_json(data)


def _cases(
    engine: Engine, now: datetime, since: datetime, until: datetime, **filters: Any
) -> list[str]:
    with engine.connect() as conn:
        rows = _drill_rows(conn, since, until, filters)
    return report.select_cases(rows, now=now, **filters)


def _drill_rows(
    conn: Connection, since: datetime, until: datetime, filters: Mapping[str, Any]
) -> list[report.CaseRow]:
    """The cases a drill-down filters: only its channel's, and only its week's, when it has
    them (the same cases case_filter keeps, from fewer rows read into Python)."""
    if filters.get("week"):
        try:
            monday = date.fromisoformat(filters["week"])
        except ValueError:
            raise ValueError("week is a week's Monday, as YYYY-MM-DD") from None
        start = datetime.combine(monday, datetime.min.time(), since.tzinfo)
        since, until = max(since, start), min(until, start + timedelta(days=7))
    return report_rows.fetch(conn, since, until, channel=filters.get("channel") or None)


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
            agent=query.get("agent") or None,
            team=query.get("team") or None,
            language=query.get("language") or None,
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
# Part of the inbox: the same base template, navigation, stylesheet (static/app.css, the
# "Manager" section) and CSP as the queue. Charts are SVG drawn here; the page runs no script.

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# The page's rows of figures, and the drill-down each cell opens (None: no list behind it).
PAGE_ROWS: tuple[tuple[str, str | None], ...] = (
    ("volume", "all"),
    ("ack_coverage_pct", None),
    ("first_response_p50_s", "answered"),
    ("first_response_p90_s", "answered"),
    ("sla_attained_pct", "sla_missed"),
    ("next_response_p50_s", "next_waited"),
    ("next_response_p90_s", "next_waited"),
    ("next_response_sla_attained_pct", "next_missed"),
    ("resolution_p50_s", "resolved"),
    ("open", "open"),
    ("unanswered", "unanswered"),
    ("oldest_unanswered_age_s", "unanswered"),
    ("followups_per_case", "followed_up"),
    ("reopen_rate_pct", "reopened"),
    ("promise_kept_pct", "promise_broken"),
)
# What a drill-down list shows, in words.
WHICH_WORDS = {
    "all": "all cases",
    "open": "open cases",
    "unanswered": "cases not answered yet",
    "answered": "answered cases",
    "resolved": "resolved cases",
    "sla_missed": "cases whose first response missed its due time",
    "followed_up": "cases with follow-ups",
    "promise_broken": "cases answered later than the acknowledgement promised",
    "next_waited": "cases where a follow-up waited for us",
    "next_missed": "cases where a next response missed its due time",
    "reopened": "reopened cases",
}
DRILL_PATH = "/manager/audit/cases"
DRILL_LIMIT = 500


def _drill(params: dict[str, Any], path: str = DRILL_PATH) -> str:
    return path + "?" + urlencode({k: v for k, v in params.items() if v is not None})


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _svg_open(width: int, height: int, label: str) -> str:
    # viewBox without a fixed size: the stylesheet scales the chart to the column's width.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}">'
    )


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
        _svg_open(width, height, "first response distribution per channel"),
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


def next_response_svg(data: dict[str, Any], since: str) -> str:
    """Next response per channel: the median as a solid bar, the 90th percentile as a pale
    one behind it, both linking to the cases whose follow-ups waited for us."""
    channels = data["channels"]
    row_h, left, right, top = 34, 90, 110, 10
    width = 720
    height = top + row_h * max(1, len(channels)) + 10
    peak = max([1.0, *(c["next_response_p90_s"] or 0 for c in channels.values())])
    plot_w = width - left - right
    parts = [_svg_open(width, height, "next response per channel, median and 90th percentile")]
    for i, (name, stats) in enumerate(channels.items()):
        y = top + i * row_h
        colour = PALETTE[i % len(PALETTE)]
        href = escape(_drill({"since": since, "channel": name, "which": "next_waited"}))
        parts.append(
            f'<text x="{left - 6}" y="{y + 17}" font-size="12" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        p50, p90 = stats["next_response_p50_s"], stats["next_response_p90_s"]
        if p50 is None or p90 is None:
            parts.append(
                f'<text x="{left}" y="{y + 17}" font-size="11" fill="#5f6b7a">'
                "no next responses</text>"
            )
            continue
        w50, w90 = plot_w * p50 / peak, plot_w * p90 / peak
        words = f"median {report.duration_words(p50)}, 90th {report.duration_words(p90)}"
        parts.append(
            f'<a href="{href}"><rect x="{left}" y="{y + 4}" width="{w90:.1f}" height="20" '
            f'fill="{colour}" fill-opacity="0.3"><title>{escape(name)}: {words}</title></rect>'
            f'<rect x="{left}" y="{y + 4}" width="{w50:.1f}" height="20" fill="{colour}">'
            f"<title>{escape(name)}: {words}</title></rect></a>"
            f'<text x="{left + w90 + 6:.1f}" y="{y + 18}" font-size="11">'
            f"{escape(report.duration_words(p50))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def ratio_svg(data: dict[str, Any], since: str) -> str:
    """The parity ratio per week, with the threshold as a dashed red line."""
    weeks = list(data["weeks"])
    width, height, left, bottom = 720, 220, 40, 30
    plot_w, plot_h = width - left - 10, height - bottom - 20
    threshold = float(data["parity_ratio_threshold"])
    peak = max([threshold * 1.2, *(w["parity_ratio"] or 0 for w in weeks)])
    step = plot_w / max(1, len(weeks))

    def y(value: float) -> float:
        return 20 + plot_h - plot_h * value / peak

    parts = [
        _svg_open(width, height, "parity ratio per week"),
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


def tables(data: dict[str, Any], since: str) -> list[dict[str, Any]]:
    """The page's tables, one per grouping: a column per group (and All for channels), a
    line per figure, each figure a link to the cases behind it."""
    rows = list(PAGE_ROWS)
    rows += [
        (c, None) for c in report.CSAT_COLUMNS if any(c in g for g in data["channels"].values())
    ]
    out = []
    for dim_name, dim in report.DIMENSIONS.items():
        groups: dict[str, dict[str, Any]] = data.get(dim.key) or {}
        if not groups:
            continue
        columns: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (name, stats, {dim_name: name}) for name, stats in groups.items()
        ]
        if dim_name == "channel":
            columns.append(("All", data["total"], {}))
        lines = []
        for column, which in rows:
            cells = []
            for _, stats, params in columns:
                text = report.cell_text(column, stats.get(column))
                href = None
                if which is not None and stats["volume"]:
                    href = _drill({"since": since, **params, "which": which})
                cells.append({"text": text, "href": href})
            lines.append({"label": report.LABELS[column], "cells": cells})
        out.append(
            {
                "key": dim.key,
                "label": dim.label,
                "groups": [name for name, _, _ in columns],
                "lines": lines,
            }
        )
    return out


PERIODS = (("7d", "Last 7 days"), ("30d", "Last 30 days"), ("90d", "Last 90 days"))


async def page(request: web.Request) -> web.StreamResponse:
    now, since, until = _period(request)
    settings = _settings(request)
    data = await blocking(
        compute,
        context(request).engine,
        now,
        since,
        until,
        settings.parity_ratio_threshold,
        settings.parity_on,
    )
    since_param = request.rel_url.query.get("since") or f"{settings.default_period_days}d"
    query = urlencode({"since": since_param})
    return pages.render(
        request,
        "manager.html",
        data=data,
        since=since_param,
        periods=PERIODS,
        period=report.period_words(data),
        measure=data["parity_on"].replace("_", " "),
        ratio=report.cell_text("ratio", data["parity_ratio"]),
        tables=tables(data, since_param),
        histogram=Markup(histogram_svg(data, since_param)),  # noqa: S704 - escaped when drawn
        next_chart=Markup(next_response_svg(data, since_param)),  # noqa: S704
        ratio_chart=Markup(ratio_svg(data, since_param)),  # noqa: S704
        # CSAT next to speed, per channel (inbox/csat.py; escaped where it is drawn).
        csat=Markup(csat_table(data.get("csat", {}))),  # noqa: S704
        exports={
            "csv": f"/api/audit/report?{query}&format=csv",
            "json": f"/api/audit/report?{query}",
        },
    )


def _case_list(
    engine: Engine,
    principal: Any,
    now: datetime,
    since: datetime,
    until: datetime,
    **filters: Any,
) -> tuple[int, list[dict[str, Any]]]:
    """The queue's rows for the cases behind a figure (the first DRILL_LIMIT, queue order)."""
    with engine.connect() as conn:
        rows = _drill_rows(conn, since, until, filters)
        keep = report.case_filter(now=now, **filters)
        ids = [r.id for r in rows if keep(r)]
        # The queue's order (current due time, age, id), in chunks: a figure may stand for
        # more cases than one statement takes parameters.
        order: list[tuple[datetime, datetime, int]] = []
        for chunk in queries._chunks(ids):
            order += conn.execute(
                select(Case.due_at, Case.first_inbound_at, Case.id).where(Case.id.in_(chunk))
            ).all()
        first = [case_id for _, _, case_id in sorted(order)[:DRILL_LIMIT]]
        cases = list(
            conn.execute(select(Case).where(Case.id.in_(first)).order_by(*queries.queue_order()))
        )
        return len(ids), casework.summaries(conn, cases, principal.id, now)


async def cases_page(request: web.Request) -> web.StreamResponse:
    now, since, until = _period(request)
    query = request.rel_url.query
    try:
        bucket = int(query["bucket"]) if query.get("bucket") else None
    except ValueError as exc:
        raise web.HTTPBadRequest(text="bucket is a whole number") from exc
    filters = {
        "channel": query.get("channel") or None,
        "side": query.get("side") or None,
        "agent": query.get("agent") or None,
        "team": query.get("team") or None,
        "language": query.get("language") or None,
        "bucket": bucket,
        "week": query.get("week") or None,
        "which": query.get("which") or "all",
    }
    try:
        count, items = await blocking(
            _case_list,
            context(request).engine,
            principal(request),
            now,
            since,
            until,
            **filters,
        )
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    words = [WHICH_WORDS.get(str(filters["which"]), "cases")]
    for key in ("channel", "side", "agent", "team"):
        if filters[key]:
            words.append(f"{key} {filters[key]}")
    if bucket is not None and 0 <= bucket < len(report.BUCKET_LABELS):
        words.append(f"first response {report.BUCKET_LABELS[bucket]}")
    if filters["week"]:
        words.append(f"week of {filters['week']}")
    since_param = query.get("since") or f"{_settings(request).default_period_days}d"
    return pages.render(
        request,
        "manager_cases.html",
        title=", ".join(words),
        count=count,
        shown=len(items),
        rows=pages.queue_rows(items, now, True),
        # A figure's cases are read here, not acted on in bulk.
        selectable=False,
        back=_drill({"since": since_param}, "/manager/audit"),
        json_link=_drill({"since": since_param, **filters}, "/api/audit/cases"),
    )


_PERIOD_PARAMS = (
    Param("since", "30d, 12h, 2w or an ISO date (default: [audit] default_period_days)"),
    Param("until", "the period's end (default: now)"),
)


_DRILL_PARAMS = (
    *_PERIOD_PARAMS,
    Param("channel", "only this channel"),
    Param("side", "public or private"),
    Param("agent", "only this agent's cases (assignee, else first responder)"),
    Param("team", "only this team's cases"),
    Param("language", "only cases answered in this language: en, es, fr, de or pt"),
    Param("bucket", "first-response histogram bucket index", "integer"),
    Param("week", "the Monday of a week, YYYY-MM-DD"),
    Param("which", ", ".join(WHICH_WORDS)),
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
            DRILL_PATH,
            cases_page,
            "The cases behind one figure of the manager page, as the queue lists them",
            "audit",
            role="manager",
            kind="html",
            query=_DRILL_PARAMS,
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
            query=_DRILL_PARAMS,
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
