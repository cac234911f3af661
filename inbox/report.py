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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

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
    # Next responses: every later wait for us (a follow-up after we answered), with its own
    # due time under the same policy (inbox/turns.py).
    "next_turns",
    "next_answered",
    "next_response_p50_s",
    "next_response_p90_s",
    "next_sla_judged",
    "next_sla_attained",
    "next_response_sla_attained_pct",
    "reopened",
    "reopen_rate_pct",
)
# Readable names of the columns, for the page and the command's table (the JSON and CSV keep
# the words above).
LABELS: dict[str, str] = {
    "volume": "Cases",
    "ack_eligible": "Acks due",
    "ack_sent": "Acks sent",
    "ack_coverage_pct": "Acknowledged",
    "answered": "Answered",
    "first_response_p50_s": "First response (median)",
    "first_response_p90_s": "First response (90th pct)",
    "resolved": "Resolved",
    "resolution_p50_s": "Resolution (median)",
    "resolution_p90_s": "Resolution (90th pct)",
    "sla_judged": "SLA judged",
    "sla_attained": "SLA met",
    "sla_attained_pct": "First response on time",
    "open": "Open",
    "oldest_open_age_s": "Oldest open",
    "unanswered": "Unanswered",
    "oldest_unanswered_age_s": "Oldest unanswered",
    "followups": "Follow-ups",
    "followups_per_case": "Follow-ups per case",
    "promises": "Promises",
    "promise_error_p50_s": "Answer vs promise (median)",
    "promise_kept_pct": "Promise kept",
    "next_turns": "Follow-ups waiting for us",
    "next_answered": "Next responses",
    "next_response_p50_s": "Next response (median)",
    "next_response_p90_s": "Next response (90th pct)",
    "next_sla_judged": "Next SLA judged",
    "next_sla_attained": "Next SLA met",
    "next_response_sla_attained_pct": "Next response on time",
    "reopened": "Reopened",
    "reopen_rate_pct": "Reopen rate",
    # CSAT, when a figure is given to build() (inbox/csat.py): see CSAT_COLUMNS.
    "csat_score_pct": "Satisfied (CSAT)",
    "csat_response_rate_pct": "CSAT response rate",
}
# The place for satisfaction per channel: build(csat=...) merges these keys into each
# channel's figures, and the page and the command show them next to speed when present.
CSAT_COLUMNS = ("csat_score_pct", "csat_response_rate_pct")
# What the parity ratio compares: the median of this response, per channel.
PARITY_MEASURES = ("first_response", "next_response")


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
    # The parity ratio compares the channels' median first response (default) or median
    # next response (the answer to a follow-up).
    parity_on: Literal["first_response", "next_response"] = "first_response"
    # `parity run` recomputes the report's daily rollups of the days that changed this
    # often (seconds; PostgreSQL only; 0: never, only `parity audit fold`). Between two
    # folds the report reads the changed days from the cases: exact, a little slower.
    rollup_interval_s: int = Field(default=60, ge=0, le=86400)


@dataclass(frozen=True, slots=True)
class Turn:
    """A later wait for us (turn 1 on; turn 0 is the case's own first response)."""

    started_at: datetime
    due_at: datetime
    responded_at: datetime | None = None
    # Ended without a reply (resolved, then reopened by a new message).
    closed_at: datetime | None = None


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
    # The next turns (follow-ups that waited for us), oldest first.
    next_turns: tuple[Turn, ...] = ()
    reopens: int = 0
    # Whose case it is: the assignee, else whoever answered it first.
    agent: str | None = None
    # Set once teams exist; the report shows per-team figures only when some case has one.
    team: str | None = None
    # The language the case is answered in (cases.language): a dimension like the channel.
    language: str = "en"


def percentile(values: Sequence[float], p: int) -> float | None:
    """The p-th percentile with statistics.quantiles(method="inclusive") semantics, to the
    millisecond (so the SQL path's percentile_cont, which interpolates in another order of
    operations, gives the same figure)."""
    if not values:
        return None
    if len(values) == 1:
        return round(float(values[0]), 3)
    return round(float(statistics.quantiles(values, n=100, method="inclusive")[p - 1]), 3)


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


def turn_judged(row: CaseRow, turn: Turn, now: datetime) -> bool:
    """A next turn counts for the SLA once answered, or once overdue while still waiting (a
    case resolved without a reply to the follow-up is not judged: someone decided it needed
    none, as with a "thank you")."""
    if turn.responded_at is not None:
        return True
    return turn.closed_at is None and is_open(row) and turn.due_at < now


def next_responses_s(row: CaseRow) -> list[float]:
    return [_seconds(t.responded_at, t.started_at) for t in row.next_turns if t.responded_at]


def next_missed(row: CaseRow, now: datetime) -> bool:
    return any(
        turn_judged(row, t, now) and (t.responded_at is None or t.responded_at > t.due_at)
        for t in row.next_turns
    )


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
    next_turns = [(r, t) for r in rows for t in r.next_turns]
    next_times = [s for r in rows for s in next_responses_s(r)]
    next_judged = [(r, t) for r, t in next_turns if turn_judged(r, t, now)]
    next_met = [
        1 for _, t in next_judged if t.responded_at is not None and t.responded_at <= t.due_at
    ]
    reopened = sum(1 for r in rows if r.reopens > 0)
    # Reopen rate: of the cases that were resolved at least once, how many came back.
    ever_resolved = sum(1 for r in rows if r.status == "resolved" or r.reopens > 0)
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
        "next_turns": len(next_turns),
        "next_answered": len(next_times),
        "next_response_p50_s": percentile(next_times, 50),
        "next_response_p90_s": percentile(next_times, 90),
        "next_sla_judged": len(next_judged),
        "next_sla_attained": len(next_met),
        "next_response_sla_attained_pct": _pct(len(next_met), len(next_judged)),
        "reopened": reopened,
        "reopen_rate_pct": _pct(reopened, ever_resolved),
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


@dataclass(frozen=True)
class Dimension:
    """One way to split the report: its JSON key, its heading, and each case's value."""

    key: str
    label: str
    of: Callable[[CaseRow], str | None]
    # Groups shown even when empty (both sides, always).
    always: tuple[str, ...] = ()
    # Only in the report when some case has a value (teams, before teams exist).
    optional: bool = False


# The report's groupings, in the page's order. A new one (a case's language, a team) is one
# entry here and a field on CaseRow: the table, CSV, page and drill-down follow.
DIMENSIONS: dict[str, Dimension] = {
    "channel": Dimension("channels", "Channel", lambda r: r.channel),
    "side": Dimension("sides", "Side", lambda r: r.visibility, always=SIDES),
    # Answering one language slower than another is the same failure as one channel slower.
    "language": Dimension("language", "Language", lambda r: r.language),
    "agent": Dimension("agents", "Agent", lambda r: r.agent, optional=True),
    "team": Dimension("teams", "Team", lambda r: r.team, optional=True),
}


def grouped(rows: Sequence[CaseRow], dim: Dimension) -> dict[str, list[CaseRow]]:
    """The cases per value of one dimension, by name; cases without a value are left out
    (they still count in the total)."""
    groups: dict[str, list[CaseRow]] = {name: [] for name in dim.always}
    for row in rows:
        value = dim.of(row)
        if value is not None:
            groups.setdefault(value, []).append(row)
    if dim.always:
        return groups
    return dict(sorted(groups.items()))


def measure_values(rows: Iterable[CaseRow], measure: str) -> list[float]:
    """The response times the parity ratio compares: first or next responses."""
    if measure == "next_response":
        return [s for r in rows for s in next_responses_s(r)]
    return [s for s in map(first_response_s, rows) if s is not None]


def build(
    rows: Sequence[CaseRow],
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str = "first_response",
    csat: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole report as one JSON-ready object, computed in Python from the rows (the
    SQLite path, and the oracle of the PostgreSQL one in inbox/report_sql.py).

    `csat`: satisfaction figures per channel (keys of CSAT_COLUMNS), merged into each
    channel's figures when given.
    """
    if parity_on not in PARITY_MEASURES:
        raise ValueError(f"parity_on is one of {', '.join(PARITY_MEASURES)}")
    groups: dict[str, dict[str, Any]] = {}
    for dim in DIMENSIONS.values():
        parts = grouped(rows, dim)
        if dim.optional and not parts:
            continue
        groups[dim.key] = {name: group_stats(g, now) for name, g in parts.items()}
    weeks = []
    for week, group in sorted(_by(rows, lambda r: week_of(r.first_inbound_at)).items()):
        per_channel = [
            percentile(measure_values(g, parity_on), 50) for g in _by(group, _channel).values()
        ]
        weeks.append((week, len(group), per_channel))
    histograms = {name: histogram(g) for name, g in sorted(_by(rows, _channel).items())}
    return assemble(
        groups,
        group_stats(rows, now),
        weeks,
        histograms,
        now=now,
        since=since,
        until=until,
        threshold=threshold,
        parity_on=parity_on,
        csat=csat,
    )


def assemble(
    groups: dict[str, dict[str, Any]],
    total: dict[str, Any],
    weeks: Sequence[tuple[str, int, Sequence[float | None]]],
    histograms: dict[str, list[int]],
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str,
    csat: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The report object from its parts (figures per group, the week's medians per channel,
    the histograms), however they were computed."""
    channels = groups["channels"]
    for name, figures in (csat or {}).items():
        if name in channels:
            channels[name].update({k: v for k, v in figures.items() if k in CSAT_COLUMNS})
    metric = f"{parity_on}_p50_s"
    ratio = parity_ratio(c[metric] for c in channels.values())
    medians = {n: c[metric] for n, c in channels.items() if c[metric] is not None}
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "generated_at": now.isoformat(),
        **groups,
        "language_parity_ratio": parity_ratio(
            g[metric] for g in groups.get("language", {}).values()
        ),
        "total": total,
        "parity_on": parity_on,
        "parity_ratio": ratio,
        "parity_best_channel": min(medians, key=lambda n: medians[n]) if medians else None,
        "parity_worst_channel": max(medians, key=lambda n: medians[n]) if medians else None,
        "parity_ratio_threshold": threshold,
        "parity_breach": ratio is not None and ratio > threshold,
        "weeks": [
            {"week": week, "volume": volume, "parity_ratio": parity_ratio(per_channel)}
            for week, volume, per_channel in weeks
        ],
        "histogram": {"buckets": list(BUCKET_LABELS), "channels": histograms},
    }


def _channel(row: CaseRow) -> str:
    return row.channel


def to_csv(report: dict[str, Any]) -> str:
    """The table as CSV: one line per channel, then per side (then agent, team, ...), then
    the total. CSAT columns follow when the report has them."""
    extra = [c for c in CSAT_COLUMNS if any(c in g for g in report["channels"].values())]
    columns = [*COLUMNS, *extra]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "name", *columns])
    for kind, dim in DIMENSIONS.items():
        for name, stats in report.get(dim.key, {}).items():
            writer.writerow([kind, name, *_csv_cells(stats, columns)])
    writer.writerow(["total", "all", *_csv_cells(report["total"], columns)])
    return out.getvalue()


def _csv_cells(stats: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    return ["" if stats.get(c) is None else stats[c] for c in columns]


def case_filter(
    *,
    now: datetime,
    channel: str | None = None,
    side: str | None = None,
    agent: str | None = None,
    team: str | None = None,
    bucket: int | None = None,
    week: str | None = None,
    which: str = "all",
    language: str | None = None,
) -> Callable[[CaseRow], bool]:
    """The test behind one chart bucket or table cell (the drill-down)."""
    tests: list[Callable[[CaseRow], bool]] = []
    wanted = {
        "channel": channel,
        "side": side,
        "agent": agent,
        "team": team,
        "language": language,
    }
    for dim_name, value in wanted.items():
        if value:
            tests.append(_has(DIMENSIONS[dim_name], value))
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
        "next_waited": lambda r: bool(r.next_turns),
        "next_missed": lambda r: next_missed(r, now),
        "reopened": lambda r: r.reopens > 0,
    }
    if which not in filters:
        raise ValueError(f"which is one of {', '.join(filters)}")
    tests.append(filters[which])
    return lambda r: all(t(r) for t in tests)


def _has(dim: Dimension, value: str) -> Callable[[CaseRow], bool]:
    return lambda r: dim.of(r) == value


def select_cases(rows: Iterable[CaseRow], *, now: datetime, **filters: Any) -> list[str]:
    """The references behind one chart bucket or table cell (the drill-down)."""
    keep = case_filter(now=now, **filters)
    return [r.reference for r in rows if keep(r)]


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


def duration_words(seconds: float | None) -> str:
    """A duration as a person says it, to two units: "45 s", "3 min 20 s", "5 h 12 min",
    "2 d 4 h"; rounded to the second; "-" for none. Negative (answered before a promise)
    keeps its sign: "-1 h 5 min"."""
    if seconds is None:
        return "–"
    sign = "-" if seconds < 0 else ""
    left = round(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        amount, left = divmod(left, size)
        if amount or parts:
            parts.append(f"{amount} {name}")
        if len(parts) == 2:
            break
    if not parts:
        return "0 s"
    if len(parts) == 2 and parts[1].startswith("0 "):
        parts.pop()
    return sign + " ".join(parts)


def cell_text(column: str, value: Any) -> str:
    """One figure as the page and the command show it: durations in words, percentages
    with a sign, counts as they are."""
    if value is None:
        return "–"
    if column.endswith("_s"):
        return duration_words(float(value))
    if column.endswith("_pct"):
        return f"{float(value):.1f}%"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def period_words(report: Mapping[str, Any]) -> str:
    """The period to the minute, in UTC: "2026-11-07 15:25 to 2026-12-07 15:25 UTC"."""
    since = datetime.fromisoformat(report["since"]).astimezone(UTC)
    until = datetime.fromisoformat(report["until"]).astimezone(UTC)
    return f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


# The command's and the page's main table: the figures a manager compares across channels.
SUMMARY = (
    "volume",
    "ack_coverage_pct",
    "first_response_p50_s",
    "first_response_p90_s",
    "sla_attained_pct",
    "next_response_p50_s",
    "next_response_p90_s",
    "next_response_sla_attained_pct",
    "resolution_p50_s",
    "unanswered",
    "reopen_rate_pct",
    "promise_kept_pct",
)


def summary_columns(report: Mapping[str, Any]) -> list[str]:
    csat = [c for c in CSAT_COLUMNS if any(c in g for g in report["channels"].values())]
    return [*SUMMARY, *csat]


def to_text(report: dict[str, Any]) -> str:
    """A terminal table with readable headings and durations: one block per grouping (channel,
    side, agent, ...), then the parity line."""
    shown = summary_columns(report)
    lines = [f"Cases first heard from {period_words(report)}"]
    for dim in DIMENSIONS.values():
        groups = report.get(dim.key)
        if not groups:
            continue
        # One column per group, one line per figure: it stays readable with many columns
        # of figures and a handful of channels.
        names = list(groups)
        figures = [groups[n] for n in names]
        if dim.key == "channels":
            names.append("All")
            figures.append(report["total"])
        table = [[dim.label, *names]]
        for column in shown:
            table.append([LABELS[column], *(cell_text(column, f.get(column)) for f in figures)])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.append("")
        for row in table:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
    flag = " BREACH" if report["parity_breach"] else ""
    measure = report.get("parity_on", "first_response").replace("_", " ")
    ratio = report["parity_ratio"]
    lines.append("")
    lines.append(
        f"Parity ratio ({measure}, slowest channel's median over the fastest's): "
        f"{'–' if ratio is None else f'{ratio:.2f}'} "
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
