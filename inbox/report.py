"""The manager's per-channel service report: pure computation over rows already fetched.

Every figure is computed here from `CaseRow`s (inbox/report_rows.py fetches them), so the
report, the CSV, the page, the drill-down and /healthz all agree. Percentiles follow
`statistics.quantiles(data, n=100, method="inclusive")`: p50 is element 49 and p90 element
89 of that list; a single value is its own percentile; no values give None.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from inbox.config import Strict

# A case's public/private side is the visibility of its first inbound message.
SIDES = ("public", "private")
# Histogram edges of the first response, in seconds: the last bucket is open-ended.
BUCKET_EDGES: tuple[float, ...] = (0, 900, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 3 * 86400)
BUCKET_LABELS = ("<15m", "15m-1h", "1-4h", "4-8h", "8-24h", "1-3d", ">=3d")
# The table's columns, in order: the JSON names and the CSV header are the same words.
COLUMNS = (
    "volume",
    "ack_eligible",
    "ack_sent",
    "ack_coverage_pct",
    "answered",
    "first_response_p50_s",
    "first_response_p90_s",
    "resolved",
    "resolution_p50_s",
    "resolution_p90_s",
    "sla_judged",
    "sla_attained",
    "sla_attained_pct",
    "open",
    "oldest_open_age_s",
    "unanswered",
    "oldest_unanswered_age_s",
    "followups",
    "followups_per_case",
    "promises",
    "promise_error_p50_s",
    "promise_kept_pct",
)


class AuditSettings(Strict):
    """[audit] in settings.toml."""

    # Worst channel's median first response over the best's above this is a breach, shown
    # by `parity audit`, on the manager page and in /healthz.
    parity_ratio_threshold: float = Field(default=2.0, gt=1.0)
    # The period /healthz and the page use when none is asked for.
    default_period_days: int = Field(default=30, ge=1, le=3660)
    # Development only: without PARITY_AUDIT_KEY, chain the audit log with a constant key
    # that is public (it detects accidents, not forgery) instead of refusing to start.
    # `parity doctor` warns while it is on.
    allow_unkeyed: bool = False
    # `parity run` seals the heads of all audit chains this often (seconds; 0: never, only
    # `parity audit checkpoint` seals). A checkpoint taken without the key is the newest seal.
    seal_interval_s: int = Field(default=300, ge=0, le=86400)


# slots: a million of these is the bench's case; without slots each carries a dict.
@dataclass(frozen=True, slots=True)
class CaseRow:
    id: int
    reference: str
    channel: str
    visibility: str
    status: str
    first_inbound_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    due_at: datetime
    followups: int
    ack_state: str | None
    # The time the acknowledgement promised a person would answer (audit log, eta_at).
    eta_at: datetime | None


def percentile(values: Sequence[float], p: int) -> float | None:
    """The p-th percentile with statistics.quantiles(method="inclusive") semantics."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[p - 1])


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def first_response_s(row: CaseRow) -> float | None:
    if row.first_response_at is None:
        return None
    return _seconds(row.first_response_at, row.first_inbound_at)


def is_open(row: CaseRow) -> bool:
    return row.status != "resolved"


def is_unanswered(row: CaseRow) -> bool:
    return row.first_response_at is None and is_open(row)


def group_stats(rows: Sequence[CaseRow], now: datetime) -> dict[str, Any]:
    """All the table's figures for one group of cases (a channel, a side, or everything)."""
    responses = [s for s in (first_response_s(r) for r in rows) if s is not None]
    resolutions = [
        _seconds(r.resolved_at, r.first_inbound_at)
        for r in rows
        if r.status == "resolved" and r.resolved_at is not None
    ]
    # SLA: answered cases are judged on their first response; an unanswered case only once
    # its due time has passed (before that it can still make it).
    judged = [r for r in rows if r.first_response_at is not None or r.due_at < now]
    attained = [
        r for r in judged if r.first_response_at is not None and r.first_response_at <= r.due_at
    ]
    open_rows = [r for r in rows if is_open(r)]
    unanswered = [r for r in rows if is_unanswered(r)]
    # Acknowledgement coverage: the normalizer decided on every case it could acknowledge
    # (ack_state set: queued, sent, failed, unknown or withheld); sent is what reached them.
    eligible = [r for r in rows if r.ack_state is not None]
    sent = [r for r in eligible if r.ack_state == "sent"]
    # Promise kept: judged like the SLA, against the ETA the acknowledgement told.
    promised = [
        r
        for r in rows
        if r.eta_at is not None and (r.first_response_at is not None or r.eta_at < now)
    ]
    kept = [
        r
        for r in promised
        if r.first_response_at is not None and r.eta_at and r.first_response_at <= r.eta_at
    ]
    errors = [
        _seconds(r.first_response_at, r.eta_at)
        for r in promised
        if r.first_response_at is not None and r.eta_at is not None
    ]
    followups = sum(r.followups for r in rows)
    return {
        "volume": len(rows),
        "ack_eligible": len(eligible),
        "ack_sent": len(sent),
        "ack_coverage_pct": _pct(len(sent), len(eligible)),
        "answered": len(responses),
        "first_response_p50_s": percentile(responses, 50),
        "first_response_p90_s": percentile(responses, 90),
        "resolved": len(resolutions),
        "resolution_p50_s": percentile(resolutions, 50),
        "resolution_p90_s": percentile(resolutions, 90),
        "sla_judged": len(judged),
        "sla_attained": len(attained),
        "sla_attained_pct": _pct(len(attained), len(judged)),
        "open": len(open_rows),
        "oldest_open_age_s": max(
            (_seconds(now, r.first_inbound_at) for r in open_rows), default=None
        ),
        "unanswered": len(unanswered),
        "oldest_unanswered_age_s": max(
            (_seconds(now, r.first_inbound_at) for r in unanswered), default=None
        ),
        "followups": followups,
        "followups_per_case": round(followups / len(rows), 4) if rows else None,
        "promises": len(promised),
        "promise_error_p50_s": percentile(errors, 50),
        "promise_kept_pct": _pct(len(kept), len(promised)),
    }


def parity_ratio(medians: Iterable[float | None]) -> float | None:
    """Worst median first response over the best; None without an answered channel or when
    the best is zero (no ratio to speak of)."""
    known = [m for m in medians if m is not None]
    if not known or min(known) <= 0:
        return None
    return round(max(known) / min(known), 4)


def _by(rows: Iterable[CaseRow], key: Callable[[CaseRow], str]) -> dict[str, list[CaseRow]]:
    groups: dict[str, list[CaseRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def week_of(at: datetime) -> str:
    """The Monday (ISO week start) of a time, as a date string: the weekly bucket key."""
    return (at - timedelta(days=at.weekday())).date().isoformat()


def bucket_of(seconds: float) -> int:
    index = 0
    for i, edge in enumerate(BUCKET_EDGES):
        if seconds >= edge:
            index = i
    return index


def histogram(rows: Sequence[CaseRow]) -> list[int]:
    counts = [0] * len(BUCKET_EDGES)
    for row in rows:
        seconds = first_response_s(row)
        if seconds is not None:
            counts[bucket_of(seconds)] += 1
    return counts


def build(
    rows: Sequence[CaseRow],
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
) -> dict[str, Any]:
    """The whole report as one JSON-ready object."""
    channels = {
        name: group_stats(group, now) for name, group in sorted(_by(rows, _channel).items())
    }
    sides = {side: group_stats([r for r in rows if r.visibility == side], now) for side in SIDES}
    ratio = parity_ratio(c["first_response_p50_s"] for c in channels.values())
    medians = {
        n: c["first_response_p50_s"]
        for n, c in channels.items()
        if c["first_response_p50_s"] is not None
    }
    weeks = []
    for week, group in sorted(_by(rows, lambda r: week_of(r.first_inbound_at)).items()):
        per_channel = {
            name: percentile([s for s in map(first_response_s, g) if s is not None], 50)
            for name, g in _by(group, _channel).items()
        }
        weeks.append(
            {"week": week, "volume": len(group), "parity_ratio": parity_ratio(per_channel.values())}
        )
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "generated_at": now.isoformat(),
        "channels": channels,
        "sides": sides,
        "total": group_stats(rows, now),
        "parity_ratio": ratio,
        "parity_best_channel": min(medians, key=lambda n: medians[n]) if medians else None,
        "parity_worst_channel": max(medians, key=lambda n: medians[n]) if medians else None,
        "parity_ratio_threshold": threshold,
        "parity_breach": ratio is not None and ratio > threshold,
        "weeks": weeks,
        "histogram": {
            "buckets": list(BUCKET_LABELS),
            "channels": {name: histogram(g) for name, g in sorted(_by(rows, _channel).items())},
        },
    }


def _channel(row: CaseRow) -> str:
    return row.channel


def to_csv(report: dict[str, Any]) -> str:
    """The table as CSV: one line per channel, then per side, then the total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "name", *COLUMNS])
    for kind, groups in (("channel", report["channels"]), ("side", report["sides"])):
        for name, stats in groups.items():
            writer.writerow([kind, name, *("" if stats[c] is None else stats[c] for c in COLUMNS)])
    total = report["total"]
    writer.writerow(["total", "all", *("" if total[c] is None else total[c] for c in COLUMNS)])
    return out.getvalue()


def select_cases(
    rows: Iterable[CaseRow],
    *,
    now: datetime,
    channel: str | None = None,
    side: str | None = None,
    bucket: int | None = None,
    week: str | None = None,
    which: str = "all",
) -> list[str]:
    """The references behind one chart bucket or table cell (the drill-down)."""
    tests: list[Callable[[CaseRow], bool]] = []
    if channel:
        tests.append(lambda r: r.channel == channel)
    if side:
        tests.append(lambda r: r.visibility == side)
    if week:
        tests.append(lambda r: week_of(r.first_inbound_at) == week)
    if bucket is not None:
        tests.append(lambda r: (s := first_response_s(r)) is not None and bucket_of(s) == bucket)
    filters: dict[str, Callable[[CaseRow], bool]] = {
        "all": lambda r: True,
        "open": is_open,
        "unanswered": is_unanswered,
        "answered": lambda r: r.first_response_at is not None,
        "resolved": lambda r: r.status == "resolved",
        "sla_missed": lambda r: (
            (r.first_response_at is not None and r.first_response_at > r.due_at)
            or (r.first_response_at is None and r.due_at < now)
        ),
        "followed_up": lambda r: r.followups > 0,
        "promise_broken": lambda r: (
            r.eta_at is not None
            and (
                (r.first_response_at is not None and r.first_response_at > r.eta_at)
                or (r.first_response_at is None and r.eta_at < now)
            )
        ),
    }
    if which not in filters:
        raise ValueError(f"which is one of {', '.join(filters)}")
    tests.append(filters[which])
    return [r.reference for r in rows if all(t(r) for t in tests)]


_PERIOD = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")


def parse_since(text: str, now: datetime) -> datetime:
    """`30d`, `12h`, `2w`, or an ISO date/time (UTC when it names no zone)."""
    found = _PERIOD.match(text)
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        hours = {"h": 1, "d": 24, "w": 168}[unit]
        return now - timedelta(hours=amount * hours)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"since is like 30d, 12h, 2w or an ISO date, not {text!r}") from exc
    return at if at.tzinfo else at.replace(tzinfo=now.tzinfo)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_text(report: dict[str, Any]) -> str:
    """A terminal table: the main figures per channel and side, then the parity line."""
    shown = (
        "volume",
        "ack_coverage_pct",
        "first_response_p50_s",
        "first_response_p90_s",
        "resolution_p50_s",
        "sla_attained_pct",
        "unanswered",
        "promise_kept_pct",
    )
    lines = [f"period {report['since']} .. {report['until']}"]
    header = ["", *shown]
    table = [header]
    for name, stats in [*report["channels"].items(), *report["sides"].items()]:
        table.append([name, *(_fmt(stats[c]) for c in shown)])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    flag = " BREACH" if report["parity_breach"] else ""
    lines.append(
        f"parity ratio {_fmt(report['parity_ratio'])} "
        f"(threshold {report['parity_ratio_threshold']}){flag}"
    )
    return "\n".join(lines) + "\n"


def add_csat(data: dict[str, Any], by_channel: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Put satisfaction per channel next to speed (issue 23): `data["csat"]`, one entry per
    channel of the report or of the surveys, from `inbox.csat.csat_by("channel", ...)`. The
    table's columns (and so the CSV) stay as they are."""
    names = sorted(set(data["channels"]) | set(by_channel))
    data["csat"] = {
        name: {
            "first_response_p50_s": data["channels"].get(name, {}).get("first_response_p50_s"),
            "asked": by_channel.get(name, {}).get("asked", 0),
            "answered": by_channel.get(name, {}).get("answered", 0),
            "response_rate_pct": by_channel.get(name, {}).get("response_rate_pct"),
            "csat_pct": by_channel.get(name, {}).get("csat_pct"),
            "average": by_channel.get(name, {}).get("average"),
        }
        for name in names
    }
    return data
