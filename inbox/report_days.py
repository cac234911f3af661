"""The manager report on PostgreSQL from daily rollups: each day's counts and exact values per
channel, side, language, agent and team (report_days, migration 0029), summed and ranked in
numpy, with the days the rollups do not cover read from the cases in the same statement.

Why: the report's percentiles need each group's values in order, and sorting the period's
cases once per grouping made the report 15 to 40 times one bare GROUP BY at 1,000,000 cases
(inbox/report_sql.py, which stays as a second SQL oracle and in the bench). The rollups hold
the same values, already grouped, so the report reads a few hundred rows instead of the
cases and selects each percentile with numpy's partition (linear, not a sort).

How the rollups stay exact:
- A rollup row is never adjusted: `fold` recomputes whole days from the cases, with the
  same statement (AGGREGATE) the report uses for the days it reads live. One definition.
- Triggers mark the day of every case or later turn that changes in a column the report
  reads (report_dirty, append-only). The report reads a marked day, and any day the fold
  has not computed (report_folded), from the cases, so it is exact whether or not a fold ran.
- What depends on "now" (the SLA judged so far, the promises due so far) is not counted
  into the rollups: they keep the due times and promised times of the cases still waiting,
  and the report counts those before now.
- The fold deletes the marks it saw before it recomputes: a change committed after that is
  still marked, so a later report reads its day live and a later fold recomputes it.

`compute` is the report's entry: this path on PostgreSQL, the Python path (every case read
into Python, inbox/report.py) on SQLite. `parity run` folds every
`[audit] rollup_interval_s`; `parity audit fold` folds once.
Where the time goes: docs/benchmarks/inbox.md, "The manager report".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text

from inbox import report, report_rows, report_sql
from inbox.report import BUCKET_EDGES, DIMENSIONS

# The rollup's key: the UTC day of the case's first inbound message, then the dimensions
# (report_sql.SQL_DIMENSIONS, whose expressions they are; a new dimension needs a column and
# a migration, or the report falls back to the Python path: uses_rollups).
DIMS = ("channel", "side", "language", "agent", "team")
KEY = ("day", *DIMS)


def _epoch(expr: str) -> str:
    return f"EXTRACT(EPOCH FROM {expr})::float8"


_DUE = "COALESCE(c.first_due_at, c.due_at)"
_OPEN = "c.status <> 'resolved'"
_ANSWERED = "c.first_response_at IS NOT NULL"
_NR = "t.responded_at - t.started_at"

# Each count and value of a rollup row: (column, expression over a case c, over a later turn
# t of case c). The figures are report_sql._CASES' and _TURNS', each split into what does not
# depend on "now" (counted here) and the times to compare with it (kept here as values).
COUNTS: tuple[tuple[str, str, str], ...] = (
    ("volume", "count(*)", "0"),
    ("ack_eligible", "count(*) FILTER (WHERE c.ack_state IS NOT NULL)", "0"),
    ("ack_sent", "count(*) FILTER (WHERE c.ack_state = 'sent')", "0"),
    ("sla_attained", f"count(*) FILTER (WHERE c.first_response_at <= {_DUE})", "0"),
    ("open", f"count(*) FILTER (WHERE {_OPEN})", "0"),
    ("unanswered", f"count(*) FILTER (WHERE c.first_response_at IS NULL AND {_OPEN})", "0"),
    ("followups", "COALESCE(sum(c.followups), 0)", "0"),
    (
        "promised_answered",
        f"count(*) FILTER (WHERE c.ack_eta_at IS NOT NULL AND {_ANSWERED})",
        "0",
    ),
    ("kept", "count(*) FILTER (WHERE c.first_response_at <= c.ack_eta_at)", "0"),
    ("reopened", "count(*) FILTER (WHERE c.reopens > 0)", "0"),
    ("ever_resolved", "count(*) FILTER (WHERE c.status = 'resolved' OR c.reopens > 0)", "0"),
    ("next_turns", "0", "count(*)"),
    ("next_sla_attained", "0", "count(*) FILTER (WHERE t.responded_at <= t.due_at)"),
)
TIMES: tuple[tuple[str, str, str], ...] = (
    ("oldest_open", f"min(c.first_inbound_at) FILTER (WHERE {_OPEN})", "NULL::timestamp"),
    (
        "oldest_unanswered",
        f"min(c.first_inbound_at) FILTER (WHERE c.first_response_at IS NULL AND {_OPEN})",
        "NULL::timestamp",
    ),
)
_NONE = "NULL::float8[]"
VALUES: tuple[tuple[str, str, str], ...] = (
    # First response, resolution and promise error: report_sql._CASES' fr, res and perr.
    (
        "fr",
        f"array_agg({_epoch('c.first_response_at - c.first_inbound_at')})"
        f" FILTER (WHERE {_ANSWERED})",
        _NONE,
    ),
    (
        "res",
        f"array_agg({_epoch('c.resolved_at - c.first_inbound_at')})"
        " FILTER (WHERE c.status = 'resolved' AND c.resolved_at IS NOT NULL)",
        _NONE,
    ),
    (
        "perr",
        f"array_agg({_epoch('c.first_response_at - c.ack_eta_at')})"
        f" FILTER (WHERE {_ANSWERED} AND c.ack_eta_at IS NOT NULL)",
        _NONE,
    ),
    # A case not answered yet is judged once its due time has passed, and its promise once
    # the promised time has.
    (
        "due_waiting",
        f"array_agg({_epoch(_DUE)})"
        f" FILTER (WHERE c.first_response_at IS NULL AND {_DUE} IS NOT NULL)",
        _NONE,
    ),
    (
        "eta_waiting",
        f"array_agg({_epoch('c.ack_eta_at')})"
        " FILTER (WHERE c.first_response_at IS NULL AND c.ack_eta_at IS NOT NULL)",
        _NONE,
    ),
    # Next responses, and the due times of the later turns still waiting on an open case.
    ("nr", _NONE, f"array_agg({_epoch(_NR)}) FILTER (WHERE {_NR} IS NOT NULL)"),
    (
        "turn_due_waiting",
        _NONE,
        f"array_agg({_epoch('t.due_at')}) FILTER (WHERE {_NR} IS NULL AND t.closed_at IS NULL"
        f" AND {_OPEN} AND t.due_at IS NOT NULL)",
    ),
)
COLUMNS = (*KEY, *(c for c, _, _ in (*COUNTS, *TIMES, *VALUES)))

# The cases whose first inbound message is in one of the ranges (a, b) of the FROM item
# `ranges`: the days a fold recomputes, or the parts of the period the report reads live.
# One index range scan per range (ix_cases_first_inbound): LATERAL, and OFFSET 0 so that
# the planner cannot flatten it into a scan of every case filtered by a join.
_IN_RANGES = """
    {ranges} CROSS JOIN LATERAL (
        SELECT * FROM cases c WHERE c.first_inbound_at >= r.a AND c.first_inbound_at < r.b
        OFFSET 0
    ) AS c
"""
_GIVEN_RANGES = "unnest(CAST(:starts AS timestamp[]), CAST(:ends AS timestamp[])) AS r(a, b)"


def _aggregate(ranges: str) -> str:
    """The rollup rows of the cases in ranges (a FROM item with columns a and b): a row per
    day and group for the cases, another for their later turns."""
    dims = ", ".join(f"{report_sql.SQL_DIMENSIONS[d]} AS {d}" for d in DIMS)
    source = _IN_RANGES.format(ranges=ranges)
    cases = ", ".join(f"{e} AS {c}" for c, e, _ in (*COUNTS, *TIMES, *VALUES))
    turns = ", ".join(e for _, _, e in (*COUNTS, *TIMES, *VALUES))
    group = ", ".join(str(i) for i in range(1, len(KEY) + 1))
    # Only our own constant SQL is formatted in; the ranges are bound.
    return (
        f"SELECT c.first_inbound_at::date AS day, {dims}, {cases} FROM {source}"  # noqa: S608
        f" GROUP BY {group}"
        f" UNION ALL SELECT c.first_inbound_at::date AS day, {dims}, {turns}"
        f" FROM {source} JOIN case_turns t ON t.case_id = c.id AND t.seq >= 1"
        f" GROUP BY {group}"
    )


AGGREGATE = _aggregate(_GIVEN_RANGES)

_COLUMN_LIST = ", ".join(COLUMNS)
_SENT = ", ".join(
    [
        *KEY,
        *(c for c, _, _ in (*COUNTS, *TIMES)),
        *(f"array_send({c}) AS {c}" for c, _, _ in VALUES),
    ]
)

# The report's one statement (one snapshot): the rollup rows of the whole days of the period
# that the fold computed and nothing has changed since, and the rest of the period (its
# first and last partial days, the days marked or never folded) aggregated from the cases.
# Values travel as array_send's binary arrays, read by numpy without a Python float each.
READ = f"""
    WITH marked AS (
        SELECT DISTINCT day FROM report_dirty WHERE day >= :lo AND day < :hi
    ), covered AS (
        SELECT f.day FROM report_folded f
        WHERE f.day >= :lo AND f.day < :hi AND f.day NOT IN (SELECT day FROM marked)
    ), ranges AS (
        SELECT a, b FROM {_GIVEN_RANGES}
        UNION ALL
        SELECT d, d + interval '1 day'
        FROM generate_series(CAST(:lo AS timestamp), CAST(:hi AS timestamp) - interval '1 day',
                             interval '1 day') AS g(d)
        WHERE d::date NOT IN (SELECT day FROM covered)
    )
    SELECT {_SENT} FROM report_days WHERE day IN (SELECT day FROM covered)
    UNION ALL
    SELECT {_SENT} FROM ({_aggregate("ranges r")}) AS live
"""  # noqa: S608

# Only one fold at a time (a transaction-level advisory lock; another fold skips its turn).
FOLD_LOCK = 0x5041524954590017
# A fold computes at most this many days that were never folded (newest first: a store
# upgraded with years of cases is covered a few months per fold); marked days are always
# recomputed.
MAX_NEW_DAYS = 62


def uses_rollups(dialect: str) -> bool:
    """PostgreSQL, with a rollup column for every dimension of the report."""
    return report_sql.uses_sql(dialect) and set(DIMENSIONS) <= set(DIMS)


def compute(
    conn: Connection,
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str = "first_response",
    csat: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report, by the fastest path the store allows: PostgreSQL's daily rollups (this
    module), else every case read into Python (inbox/report.py, the oracle)."""
    ask: dict[str, Any] = {
        "now": now,
        "since": since,
        "until": until,
        "threshold": threshold,
        "parity_on": parity_on,
        "csat": csat,
    }
    if uses_rollups(conn.dialect.name):
        return build(conn, **ask)
    return report.build(report_rows.fetch(conn, since, until), **ask)


@dataclass(frozen=True, slots=True)
class Folded:
    """What one fold did: the days it recomputed, or that another fold was running."""

    days: tuple[date, ...] = ()
    busy: bool = False


def fold(
    engine: Engine, *, now: datetime | None = None, max_new_days: int = MAX_NEW_DAYS
) -> Folded:
    """Recompute the marked days' rollups, and up to max_new_days days never folded (newest
    first), from the cases, in one transaction."""
    at = report_sql._naive(now or datetime.now(UTC))
    with engine.begin() as conn:
        if not conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": FOLD_LOCK}
        ).scalar_one():
            return Folded(busy=True)
        # First the marks, then the cases (READ COMMITTED: a later snapshot). A change
        # committed in between is both counted and still marked: recomputed again later.
        marked = set(conn.execute(text("DELETE FROM report_dirty RETURNING day")).scalars())
        first = conn.execute(text("SELECT min(first_inbound_at) FROM cases")).scalar()
        new: list[date] = []
        if first is not None and max_new_days > 0:
            new = list(
                conn.execute(
                    text(
                        "SELECT d::date FROM generate_series(CAST(:first AS date),"
                        " CAST(:today AS date), interval '1 day') AS g(d)"
                        " WHERE d::date NOT IN (SELECT day FROM report_folded)"
                        " ORDER BY d DESC LIMIT :n"
                    ),
                    {"first": first.date(), "today": at.date(), "n": max_new_days},
                ).scalars()
            )
        days = sorted(marked | set(new))
        if not days:
            return Folded()
        starts = [datetime.combine(d, time()) for d in days]
        ends = [s + timedelta(days=1) for s in starts]
        conn.execute(text("DELETE FROM report_days WHERE day = ANY(:days)"), {"days": days})
        conn.execute(
            text(f"INSERT INTO report_days ({_COLUMN_LIST}) {AGGREGATE}"),
            {"starts": starts, "ends": ends},
        )
        conn.execute(
            text(
                "INSERT INTO report_folded (day, folded_at) SELECT unnest(CAST(:days AS date[])),"
                " :at ON CONFLICT (day) DO UPDATE SET folded_at = EXCLUDED.folded_at"
            ),
            {"days": days, "at": at},
        )
    return Folded(days=tuple(days))


def period_parts(
    since: datetime, until: datetime
) -> tuple[date, date, list[datetime], list[datetime]]:
    """The period's whole days [lo, hi) and the ranges before and after them (naive UTC)."""
    lo = since.date() + timedelta(days=0 if since.time() == time() else 1)
    hi = until.date()
    if lo >= hi:  # no whole day: the period is one range
        return lo, lo, [since], [until]
    first, last = datetime.combine(lo, time()), datetime.combine(hi, time())
    ranges = [(a, b) for a, b in ((since, first), (last, until)) if a < b]
    return lo, hi, [a for a, _ in ranges], [b for _, b in ranges]


def read(conn: Connection, since: datetime, until: datetime) -> list[Any]:
    """The rollup rows of the period [since, until) (naive UTC): folded days from the
    rollups, the rest aggregated from the cases, in one statement."""
    lo, hi, starts, ends = period_parts(since, until)
    params = {"lo": lo, "hi": hi, "starts": starts, "ends": ends}
    report_sql._apply_settings(conn)  # JIT off: compiling the wide aggregate never paid back
    return list(conn.execute(text(READ), params).mappings())


# array_send of a one-dimensional float8[] without NULLs: a 20-byte header, then per element
# its length (4 bytes) and its value (8), big-endian.
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])
_HEADER = 20


def values_of(sent: bytes | None) -> np.ndarray:
    """The floats of an array_send'd float8[] (none for NULL or an empty array)."""
    if sent is None or len(sent) <= _HEADER:
        return np.empty(0)
    dimensions, has_null = int.from_bytes(sent[0:4], "big"), int.from_bytes(sent[4:8], "big")
    if dimensions != 1 or has_null:  # AGGREGATE keeps NULLs out; anything else is a bug
        raise ValueError("a rollup array is not a one-dimensional array without NULLs")
    return np.frombuffer(sent, dtype=_ELEMENT, offset=_HEADER)["value"].astype(np.float64)


def percentiles(values: np.ndarray, ps: Iterable[float]) -> list[float] | None:
    """percentile_cont of each p over values, as PostgreSQL computes it (report_sql's
    figures, which the Python path's equal to the millisecond): partitioned, not sorted."""
    n = len(values)
    if n == 0:
        return None
    wanted = list(ps)
    positions = [p * (n - 1) for p in wanted]
    ranks = sorted({math.floor(x) for x in positions} | {math.ceil(x) for x in positions})
    ranked = np.partition(values, ranks)
    out = []
    for x in positions:
        first, second = float(ranked[math.floor(x)]), float(ranked[math.ceil(x)])
        out.append(first + (x - math.floor(x)) * (second - first))
    return out


@dataclass(slots=True)
class _Group:
    """One group's counts, oldest times and values, summed over its rollup rows."""

    counts: dict[str, int]
    times: dict[str, datetime | None]
    values: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls) -> _Group:
        return cls(
            {c: 0 for c, _, _ in COUNTS},
            {c: None for c, _, _ in TIMES},
            {c: [] for c, _, _ in VALUES},
        )

    def add(self, row: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        for column in self.counts:
            self.counts[column] += int(row[column])
        for column, at in self.times.items():
            seen = row[column]
            if seen is not None and (at is None or seen < at):
                self.times[column] = seen
        for column, parts in self.values.items():
            if len(arrays[column]):
                parts.append(arrays[column])

    def joined(self, column: str) -> np.ndarray:
        parts = self.values[column]
        return np.concatenate(parts) if parts else np.empty(0)


def figures(group: _Group, now_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group's rows as report_sql's statements return them: its figures and its later
    turns' figures."""
    c = group.counts
    fr, res, perr, nr = (group.joined(k) for k in ("fr", "res", "perr", "nr"))
    due, eta = group.joined("due_waiting"), group.joined("eta_waiting")
    turn_due = group.joined("turn_due_waiting")
    perr_p = percentiles(perr, [0.5])
    case_row = {
        "volume": c["volume"],
        "ack_eligible": c["ack_eligible"],
        "ack_sent": c["ack_sent"],
        "answered": len(fr),
        "fr_p": percentiles(fr, [0.5, 0.9]),
        "resolved": len(res),
        "res_p": percentiles(res, [0.5, 0.9]),
        "sla_judged": len(fr) + int(np.count_nonzero(due < now_s)),
        "sla_attained": c["sla_attained"],
        "open": c["open"],
        "oldest_open": group.times["oldest_open"],
        "unanswered": c["unanswered"],
        "oldest_unanswered": group.times["oldest_unanswered"],
        "followups": c["followups"],
        "promises": c["promised_answered"] + int(np.count_nonzero(eta < now_s)),
        "kept": c["kept"],
        "perr_p50": None if perr_p is None else perr_p[0],
        "reopened": c["reopened"],
        "ever_resolved": c["ever_resolved"],
    }
    turn_row = {
        "next_turns": c["next_turns"],
        "next_answered": len(nr),
        "nr_p": percentiles(nr, [0.5, 0.9]),
        "next_sla_judged": len(nr) + int(np.count_nonzero(turn_due < now_s)),
        "next_sla_attained": c["next_sla_attained"],
    }
    return case_row, turn_row


def build(
    conn: Connection,
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str = "first_response",
    csat: Mapping[str, Mapping[str, Any]] | None = None,
    rows_read: Callable[[list[Any]], object] | None = None,
) -> dict[str, Any]:
    """report.build's answer, from the rollups. rows_read, if given, sees the rows read
    (tests count where they came from)."""
    if parity_on not in report.PARITY_MEASURES:
        raise ValueError(f"parity_on is one of {', '.join(report.PARITY_MEASURES)}")
    rows = read(conn, report_sql._naive(since), report_sql._naive(until))
    if rows_read is not None:
        rows_read(rows)
    now_s = report_sql._naive(now).replace(tzinfo=UTC).timestamp()
    total = _Group.empty()
    groups: dict[tuple[str, Any], _Group] = {}
    weeks: dict[tuple[date, str], _Group] = {}
    for row in rows:
        arrays = {column: values_of(row[column]) for column, _, _ in VALUES}
        total.add(row, arrays)
        for dim in DIMS:
            if row[dim] is not None:
                groups.setdefault((dim, row[dim]), _Group.empty()).add(row, arrays)
        monday = row["day"] - timedelta(days=row["day"].weekday())
        weeks.setdefault((monday, row["channel"]), _Group.empty()).add(row, arrays)
    named = report_sql.named_ids(
        conn, {dim: [v for (d, v) in groups if d == dim] for dim in report_sql.SQL_NAMED_BY}
    )
    case_figures: dict[tuple[str, str | None], dict[str, Any]] = {}
    turn_figures: dict[tuple[str, str | None], dict[str, Any]] = {}
    for (dim, value), group in [(("", None), total), *groups.items()]:
        if dim in named:
            value = named[dim].get(value)
            if value is None:
                continue
        case_row, turn_row = figures(group, now_s)
        if case_row["volume"] == 0:  # only later turns counted here: no group
            continue
        case_figures[(dim, value)] = report_sql._case_figures(case_row, now)
        turn_figures[(dim, value)] = report_sql._turn_figures(turn_row)
    week_rows, next_rows = _week_rows(weeks)
    week_list, histograms = report_sql._weeks(
        week_rows, next_rows if parity_on == "next_response" else None
    )
    return report_sql.finish(
        case_figures,
        turn_figures,
        set(DIMS),
        week_list,
        histograms,
        now=now,
        since=since,
        until=until,
        threshold=threshold,
        parity_on=parity_on,
        csat=csat,
    )


def _week_rows(weeks: Mapping[tuple[date, str], _Group]) -> tuple[list[Any], list[Any]]:
    """report_sql's weeks statements' rows: per week and channel its volume, its median
    first response and histogram, and its median next response."""
    edges = np.array([float(e) for e in BUCKET_EDGES[1:]])
    rows, next_rows = [], []
    for (week, channel), group in weeks.items():
        if group.counts["volume"] == 0:
            continue
        fr, nr = group.joined("fr"), group.joined("nr")
        median = percentiles(fr, [0.5])
        # width_bucket(fr, edges): how many edges past the first the response reached.
        buckets = np.bincount(np.searchsorted(edges, fr, side="right"), minlength=len(BUCKET_EDGES))
        row = {"week": week, "channel": channel, "volume": group.counts["volume"]}
        row["median"] = None if median is None else median[0]
        row.update({f"b{i}": int(n) for i, n in enumerate(buckets)})
        rows.append(row)
        next_median = percentiles(nr, [0.5])
        median_next = None if next_median is None else next_median[0]
        next_rows.append({"week": week, "channel": channel, "median": median_next})
    return rows, next_rows
