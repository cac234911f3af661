"""The manager report computed by PostgreSQL from the cases themselves: counts, sums and
exact percentiles (percentile_cont) per channel, side and agent in grouping sets over the
cases of the period (two statements), one over their later turns and one for the weeks and
the histogram. The statements run at once on up to three connections, all reading one
snapshot (run_concurrently).

The report itself now reads daily rollups (inbox/report_days.py, which builds on this
module's dimensions and figure helpers); this path is kept as a second oracle that reads
the case columns as the rollups do (tests/test_report_days.py) and as the bench's "before".

The figures are the Python path's (inbox/report.py, which stays the SQLite path and this
one's oracle: tests/test_report_sql.py compares the two on the tests' data sets). The case
row carries what the report needs from elsewhere (side, turn 0's due time, the promised
time, the first responder), so no table is joined to it but the later turns; agents and
teams are named from their ids once counted. Where the time goes, and what was tried:
docs/benchmarks/inbox.md, "The manager report".
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool, QueuePool

from inbox import report
from inbox.report import BUCKET_EDGES, DIMENSIONS, SIDES

# Each dimension's value on a case row (alias c) in SQL; a dimension with no expression here
# has no values in the store, so it has no groups, as on the Python path. A new dimension
# adds its expression here, or the report falls back to the Python path.
SQL_DIMENSIONS: dict[str, str | None] = {
    "channel": "c.channel",
    "side": "COALESCE(c.side, 'private')",
    "language": "COALESCE(c.language, 'en')",
    "agent": "COALESCE(c.assignee_id, c.first_responder_id)",
    "team": "c.team_id",
}
# Dimensions whose expression is the id of a row in this table, grouped by id and named by
# the row's name once the groups are counted: the names are unique (users_name_key,
# teams_name_key) and the ids foreign keys, so the groups are the names' groups, without a
# join or a lookup per case and with integers, not names, to sort by.
SQL_NAMED_BY: dict[str, str] = {"agent": "users", "team": "teams"}

_CASES = """
    SELECT c.id, c.first_inbound_at, c.followups,
           c.status <> 'resolved' AS open,
           c.ack_state IS NOT NULL AS ack_eligible,
           c.ack_state = 'sent' AS ack_sent,
           c.first_response_at IS NOT NULL
               OR COALESCE(c.first_due_at, c.due_at) < :now AS sla_judged,
           c.first_response_at <= COALESCE(c.first_due_at, c.due_at) AS sla_attained,
           c.ack_eta_at IS NOT NULL
               AND (c.first_response_at IS NOT NULL OR c.ack_eta_at < :now) AS promised,
           c.first_response_at <= c.ack_eta_at AS kept,
           c.reopens > 0 AS reopened,
           c.status = 'resolved' OR c.reopens > 0 AS ever_resolved,
           {dims},
           EXTRACT(EPOCH FROM c.first_response_at - c.first_inbound_at)::float8 AS fr,
           CASE WHEN c.status = 'resolved'
                THEN EXTRACT(EPOCH FROM c.resolved_at - c.first_inbound_at)::float8 END AS res,
           CASE WHEN c.ack_eta_at IS NOT NULL
                     AND (c.first_response_at IS NOT NULL OR c.ack_eta_at < :now)
                THEN EXTRACT(EPOCH FROM c.first_response_at - c.ack_eta_at)::float8 END AS perr
    FROM cases c
    WHERE c.first_inbound_at >= :since AND c.first_inbound_at < :until
"""

# Each grouping set sorts the rows it aggregates (percentile_cont cannot be hashed), so they
# carry the case's conditions as booleans, not the columns they are computed from: narrower
# rows to sort. OFFSET 0 keeps the subquery from being inlined, which would compute each
# duration again in every aggregate that reads it.
_FIGURES = """
    SELECT {names}, {grouping} AS g,
        count(*) AS volume,
        count(*) FILTER (WHERE ack_eligible) AS ack_eligible,
        count(*) FILTER (WHERE ack_sent) AS ack_sent,
        count(fr) AS answered,
        percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY fr) AS fr_p,
        count(res) AS resolved,
        percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY res) AS res_p,
        count(*) FILTER (WHERE sla_judged) AS sla_judged,
        count(*) FILTER (WHERE sla_attained) AS sla_attained,
        count(*) FILTER (WHERE open) AS open,
        min(first_inbound_at) FILTER (WHERE open) AS oldest_open,
        count(*) FILTER (WHERE fr IS NULL AND open) AS unanswered,
        min(first_inbound_at) FILTER (WHERE fr IS NULL AND open) AS oldest_unanswered,
        sum(followups) AS followups,
        count(*) FILTER (WHERE promised) AS promises,
        count(*) FILTER (WHERE kept) AS kept,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY perr) AS perr_p50,
        count(*) FILTER (WHERE reopened) AS reopened,
        count(*) FILTER (WHERE ever_resolved) AS ever_resolved
    FROM ({cases} OFFSET 0) AS r
    GROUP BY GROUPING SETS ({sets})
"""

_TURNS = """
    SELECT {names}, {grouping} AS g,
        count(*) AS next_turns,
        count(nr) AS next_answered,
        percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY nr) AS nr_p,
        count(*) FILTER (WHERE nr IS NOT NULL
                         OR (closed_at IS NULL AND open AND due_at < :now))
            AS next_sla_judged,
        count(*) FILTER (WHERE responded_at <= due_at) AS next_sla_attained
    FROM (
        SELECT r.*, t.due_at, t.responded_at, t.closed_at,
               EXTRACT(EPOCH FROM t.responded_at - t.started_at)::float8 AS nr
        FROM case_turns t JOIN ({cases}) AS r ON r.id = t.case_id
        WHERE t.seq >= 1
    ) AS r
    GROUP BY GROUPING SETS ({sets})
"""

# One sort, by week and channel: a week's volume is the sum of its channels' and a channel's
# histogram the sum of its weeks', added up in Python, where grouping sets for them would sort
# the period's rows once more and take medians nobody reads. OFFSET 0 computes the measure
# and its bucket once per row, not once per aggregate that reads them.
_WEEKS = """
    SELECT week, channel, count(*) AS volume,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY {measure}) AS median{buckets}
    FROM (
        SELECT r.*, (date_trunc('week', r.first_inbound_at))::date AS week,
               {bucket} AS bucket
        FROM ({source}) AS r
        OFFSET 0
    ) AS r
    GROUP BY week, channel
"""


_NEXT_SOURCE = """
    SELECT r.*, EXTRACT(EPOCH FROM t.responded_at - t.started_at)::float8 AS nr
    FROM ({cases}) AS r LEFT JOIN case_turns t ON t.case_id = r.id AND t.seq >= 1
"""


# For the report's own transaction only (SET LOCAL ends with it; the callers' connections
# roll back when they are done). JIT compiling the report's wide expressions cost more than
# it saved (bench/audit_report.py; docs/benchmarks/inbox.md, "The manager report").
SETTINGS = ("SET LOCAL jit = off",)

# The report's statements are independent reads: they run at once, each on its own
# connection, all under one snapshot (the caller's transaction exports it, the others import
# it), so the report is as consistent as one statement would be and takes about as long as
# its longest statement rather than their sum. At most this many connections besides the
# caller's: each is a server process that sorts with its own memory (work_mem per sort) and
# comes from the pool intake and the web share. Two measured best on a 2-core server at
# 1,000,000 cases (three statements at once: 1.47 x faster than one after the other; four:
# 1.32 x; bench/audit_report.py, docs/benchmarks/inbox.md, "The manager report").
MAX_EXTRA_CONNECTIONS = 2

# The figures' grouping sets, split in two statements so that two connections share the
# largest statement (a sort of the period's cases per set): channel, side and language in
# one; agent, team and the total in the other.
FIGURE_SPLIT = 3

# What pg_export_snapshot() returns: hex and decimal fields joined by dashes. Checked before
# it is formatted into SET TRANSACTION SNAPSHOT, which takes no bound parameter.
_SNAPSHOT_ID = re.compile(r"[0-9A-F]{1,16}(-[0-9A-F]{1,16}){1,3}")


# A read of the report: its result, from a connection holding the report's snapshot.
Task = Callable[[Connection], Any]


def uses_sql(dialect: str) -> bool:
    """PostgreSQL, with an SQL expression for every dimension of the report; else the
    Python path (SQLite, or a dimension added without its SQL)."""
    return dialect == "postgresql" and set(DIMENSIONS) <= set(SQL_DIMENSIONS)


def build(
    conn: Connection,
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str = "first_response",
    csat: Mapping[str, Mapping[str, Any]] | None = None,
    snapshot_taken: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """report.build's answer, computed by PostgreSQL. snapshot_taken, if given, is called
    once the report's snapshot is taken, before its statements run (tests use it to write
    what the report must not see)."""
    if parity_on not in report.PARITY_MEASURES:
        raise ValueError(f"parity_on is one of {', '.join(report.PARITY_MEASURES)}")
    dims = {name: expr for name, expr in SQL_DIMENSIONS.items() if expr is not None}
    names = list(dims)
    cases = _CASES.format(dims=", ".join(f"{expr} AS {name}" for name, expr in dims.items()))
    # The store keeps naive UTC (inbox.models.UTCDateTime): compare with naive UTC, or
    # PostgreSQL would convert through the session's time zone.
    params = {"now": _naive(now), "since": _naive(since), "until": _naive(until)}
    grouping = f"GROUPING({', '.join(names)})"
    sets = ", ".join([*(f"({n})" for n in names), "()"])
    # GROUPING() has a bit per dimension, 1 where the row is NOT grouped by it.
    full = (1 << len(names)) - 1
    mask = {name: full ^ (1 << (len(names) - 1 - i)) for i, name in enumerate(names)}
    # Only our own constant SQL and dimension names are formatted in; the period is bound.
    parts = [part for part in (names[:FIGURE_SPLIT], names[FIGURE_SPLIT:]) if part]
    figure_parts = [
        text(_FIGURES.format(cases=cases, **_figure_part(names, part, part is parts[-1])))
        for part in parts
    ]
    turn_query = text(
        _TURNS.format(names=", ".join(names), grouping=grouping, cases=cases, sets=sets)
    )
    first_weeks, next_weeks = _weeks_statements(cases, parity_on)

    def rows_of(query: Any) -> Task:
        return lambda c: list(c.execute(query, params).mappings())

    def figures_of(query: Any) -> Task:
        # The agents and teams are named on the connection that counted them: the same
        # snapshot.
        def run(c: Connection) -> tuple[list[Any], dict[str, dict[Any, str]]]:
            rows = list(c.execute(query, params).mappings())
            return rows, _names(c, rows, names, mask)

        return run

    # The longest first: whichever connection is free next takes the next statement.
    tasks = [*map(figures_of, figure_parts), rows_of(turn_query)]
    if next_weeks is not None:
        tasks.append(rows_of(next_weeks))
    tasks.append(rows_of(first_weeks))
    done = run_concurrently(conn, tasks, snapshot_taken)
    figure_rows: list[Any] = []
    named: dict[str, dict[Any, str]] = {}
    for rows, part_named in done[: len(figure_parts)]:
        figure_rows.extend(rows)
        for name, ids in part_named.items():
            named.setdefault(name, {}).update(ids)
    turn_rows = done[len(figure_parts)]
    weeks, histograms = _weeks(done[-1], done[-2] if next_weeks is not None else None)
    figures: dict[tuple[str, str | None], dict[str, Any]] = {}
    for row in figure_rows:
        key = _key(row, names, mask, full, named)
        if key is not None:
            figures[key] = _case_figures(row, now)
    turns = {}
    for row in turn_rows:
        key = _key(row, names, mask, full, named)
        if key is not None:
            turns[key] = _turn_figures(row)
    return finish(
        figures,
        turns,
        set(dims),
        weeks,
        histograms,
        now=now,
        since=since,
        until=until,
        threshold=threshold,
        parity_on=parity_on,
        csat=csat,
    )


def finish(
    figures: Mapping[tuple[str, str | None], dict[str, Any]],
    turns: Mapping[tuple[str, str | None], dict[str, Any]],
    dims: set[str],
    weeks: list[tuple[str, int, list[float | None]]],
    histograms: dict[str, list[int]],
    *,
    now: datetime,
    since: datetime,
    until: datetime,
    threshold: float,
    parity_on: str,
    csat: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The report from each group's figures and later turns' figures (keyed by dimension
    and value, the total by ("", None)), as the Python path assembles it: the groups of each
    dimension in its order, a group without later turns with their empty figures."""
    empty = report.group_stats([], now)
    no_turns = {k: empty[k] for k in _turn_figures({})}

    def stats(key: tuple[str, str | None]) -> dict[str, Any]:
        return {**figures.get(key, empty), **turns.get(key, no_turns)}

    groups: dict[str, dict[str, Any]] = {}
    for name, dim in DIMENSIONS.items():
        if name not in dims:
            if not dim.optional:
                groups[dim.key] = {}
            continue
        values = sorted(v for (n, v) in figures if n == name and v is not None)
        if name == "side":
            values = list(SIDES) + [v for v in values if v not in SIDES]
        if dim.optional and not values:
            continue
        groups[dim.key] = {v: stats((name, v)) for v in values}
    return report.assemble(
        groups,
        stats(("", None)),
        weeks,
        histograms,
        now=now,
        since=since,
        until=until,
        threshold=threshold,
        parity_on=parity_on,
        csat=csat,
    )


def _names(
    conn: Connection, rows: list[Any], names: list[str], mask: dict[str, int]
) -> dict[str, dict[Any, str]]:
    """Per dimension of SQL_NAMED_BY, the names of the ids its groups have (every case is in
    the figures' rows, so every id the later turns have is among them)."""
    return named_ids(
        conn,
        {
            name: [r[name] for r in rows if r["g"] == mask[name] and r[name] is not None]
            for name in SQL_NAMED_BY
            if name in names
        },
    )


def named_ids(conn: Connection, ids: Mapping[str, list[Any]]) -> dict[str, dict[Any, str]]:
    """Per dimension of SQL_NAMED_BY given, the name of each of its ids (an id of no row has
    none, and its group is left out, as on the Python path)."""
    named: dict[str, dict[Any, str]] = {}
    for name, wanted in ids.items():
        named[name] = {}
        if wanted:
            # Only our own table names are formatted in; the ids are bound.
            query = text(f"SELECT id, name FROM {SQL_NAMED_BY[name]} WHERE id = ANY(:ids)")  # noqa: S608
            named[name] = {i: n for i, n in conn.execute(query, {"ids": wanted})}
    return named


def _key(
    row: Any,
    names: list[str],
    mask: dict[str, int],
    full: int,
    named: Mapping[str, Mapping[Any, str]],
) -> tuple[str, str | None] | None:
    if row["g"] == full:
        return ("", None)
    for name in names:
        if row["g"] == mask[name]:
            value = row[name]
            if name in named:
                value = named[name].get(value)
            return None if value is None else (name, value)
    return None


def _pair(values: Any) -> tuple[float | None, float | None]:
    if values is None:
        return None, None
    return _ms(values[0]), _ms(values[1])


def _ms(value: Any) -> float | None:
    # The Python path's rounding (report.percentile): to the millisecond.
    return None if value is None else round(float(value), 3)


def _case_figures(row: Any, now: datetime) -> dict[str, Any]:
    fr50, fr90 = _pair(row["fr_p"])
    res50, res90 = _pair(row["res_p"])
    volume = row["volume"]
    followups = int(row["followups"] or 0)
    pct = report._pct
    return {
        "volume": volume,
        "ack_eligible": row["ack_eligible"],
        "ack_sent": row["ack_sent"],
        "ack_coverage_pct": pct(row["ack_sent"], row["ack_eligible"]),
        "answered": row["answered"],
        "first_response_p50_s": fr50,
        "first_response_p90_s": fr90,
        "resolved": row["resolved"],
        "resolution_p50_s": res50,
        "resolution_p90_s": res90,
        "sla_judged": row["sla_judged"],
        "sla_attained": row["sla_attained"],
        "sla_attained_pct": pct(row["sla_attained"], row["sla_judged"]),
        "open": row["open"],
        "oldest_open_age_s": _age(now, row["oldest_open"]),
        "unanswered": row["unanswered"],
        "oldest_unanswered_age_s": _age(now, row["oldest_unanswered"]),
        "followups": followups,
        "followups_per_case": round(followups / volume, 4) if volume else None,
        "promises": row["promises"],
        "promise_error_p50_s": _ms(row["perr_p50"]),
        "promise_kept_pct": pct(row["kept"], row["promises"]),
        "reopened": row["reopened"],
        "reopen_rate_pct": pct(row["reopened"], row["ever_resolved"]),
    }


def _naive(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


def _age(now: datetime, at: datetime | None) -> float | None:
    return None if at is None else (_naive(now) - at).total_seconds()


def _turn_figures(row: Any) -> dict[str, Any]:
    nr50, nr90 = _pair(row.get("nr_p"))
    judged, attained = row.get("next_sla_judged", 0), row.get("next_sla_attained", 0)
    return {
        "next_turns": row.get("next_turns", 0),
        "next_answered": row.get("next_answered", 0),
        "next_response_p50_s": nr50,
        "next_response_p90_s": nr90,
        "next_sla_judged": judged,
        "next_sla_attained": attained,
        "next_response_sla_attained_pct": report._pct(attained, judged),
    }


def _weeks_statements(cases: str, parity_on: str) -> tuple[Any, Any]:
    """The weeks' statement (volumes, first-response medians, histogram) and, unless the
    parity measure is the first response, the next responses' weeks statement."""
    # bucket_of: the number of edges past the first that the response reached (the edges
    # ascend; a response below the second edge, negative ones too, is in bucket 0).
    edges = ", ".join(str(float(edge)) for edge in BUCKET_EDGES[1:])
    buckets = "".join(
        f", count(*) FILTER (WHERE bucket = {i}) AS b{i}" for i in range(len(BUCKET_EDGES))
    )
    # Only our own constant SQL is formatted in: no input reaches these strings.
    first = _WEEKS.format(
        measure="fr",
        buckets=buckets,
        bucket=f"width_bucket(fr, ARRAY[{edges}]::float8[])",
        source=cases,
    )
    if parity_on == "first_response":
        return text(first), None
    # Next responses: the turns of each week's cases; a channel without one that week has
    # no median (as on the Python path, where it is None).
    source = _NEXT_SOURCE.format(cases=cases)
    later = _WEEKS.format(measure="nr", buckets="", bucket="NULL::int", source=source)
    return text(first), text(later)


def _weeks(
    rows: list[Any], next_rows: list[Any] | None
) -> tuple[list[tuple[str, int, list[float | None]]], dict[str, list[int]]]:
    """Per week: its volume and each channel's median of the parity measure (from next_rows
    when the measure is the next response); per channel: the first-response histogram."""
    volumes: dict[Any, int] = {}
    histograms: dict[str, list[int]] = {}
    for r in rows:
        volumes[r["week"]] = volumes.get(r["week"], 0) + r["volume"]
        counts = histograms.setdefault(r["channel"], [0] * len(BUCKET_EDGES))
        for i in range(len(BUCKET_EDGES)):
            counts[i] += r[f"b{i}"]
    medians: dict[Any, list[float | None]] = {}
    for r in rows if next_rows is None else next_rows:
        medians.setdefault(r["week"], []).append(_ms(r["median"]))
    weeks = [
        (week.isoformat(), volume, medians.get(week, []))
        for week, volume in sorted(volumes.items())
    ]
    return weeks, dict(sorted(histograms.items()))


def _figure_part(names: list[str], part: list[str], total: bool) -> dict[str, str]:
    """The select list, grouping value and grouping sets of one figures statement: part's
    dimensions, and the total if asked. The others are NULL, and their bits of the grouping
    value 1 (not grouped by), so that it is the one GROUPING() of every dimension would
    give."""
    bits = {name: 1 << (len(names) - 1 - i) for i, name in enumerate(names)}
    selected = ", ".join(n if n in part else f"NULL AS {n}" for n in names)
    grouping = " + ".join(
        f"GROUPING({n}) * {bits[n]}" if n in part else str(bits[n]) for n in names
    )
    sets = [*(f"({n})" for n in part), *(["()"] if total else [])]
    return {"names": selected, "grouping": grouping, "sets": ", ".join(sets)}


def run_concurrently(
    conn: Connection, tasks: list[Task], snapshot_taken: Callable[[], object] | None = None
) -> list[Any]:
    """Each task's result, in order, the tasks run at once on conn and up to
    MAX_EXTRA_CONNECTIONS more connections of its engine, all under one snapshot: that of
    conn's transaction (begun here, REPEATABLE READ and read only, and rolled back at the
    end, if conn has none), exported to the others. If conn's transaction is READ COMMITTED
    the snapshot is the one taken on export and the others run every task.

    The tasks run one after the other on conn, as they would without this, when the
    snapshot cannot be shared or there is no one to share it with: conn autocommits, is in
    a savepoint (no export from a subtransaction) or has written (the others would not see
    its rows), the pool has no spare connection right now (it would make the report wait
    for one), or there is a single task. snapshot_taken is called before the first task."""
    if getattr(conn.connection.dbapi_connection, "autocommit", False):
        return _one_after_another(conn, tasks, snapshot_taken)
    own = conn.begin() if not conn.in_transaction() else None
    extras: list[Connection] = []
    try:
        if own is not None:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        # txid_current_if_assigned: the transaction has an id only once it has written.
        isolation, wrote = conn.execute(
            text(
                "SELECT current_setting('transaction_isolation'),"
                " txid_current_if_assigned() IS NOT NULL"
            )
        ).one()
        holds = isolation in ("repeatable read", "serializable")
        wanted = min(MAX_EXTRA_CONNECTIONS, len(tasks) - holds, _spare(conn.engine))
        if wanted > 0 and not wrote and not conn.in_nested_transaction():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            extras = _importers(conn.engine, str(snapshot), wanted)
        if not extras:
            return _one_after_another(conn, tasks, snapshot_taken)
        workers = [*extras, conn] if holds else extras
        if holds:
            _apply_settings(conn)
        if snapshot_taken is not None:
            snapshot_taken()
        return _drain(workers, tasks)
    finally:
        for extra in extras:
            extra.close()
        if own is not None:
            own.rollback()


def _one_after_another(
    conn: Connection, tasks: list[Task], snapshot_taken: Callable[[], object] | None
) -> list[Any]:
    _apply_settings(conn)
    if snapshot_taken is not None:
        snapshot_taken()
    return [task(conn) for task in tasks]


def _apply_settings(conn: Connection) -> None:
    for setting in SETTINGS:
        conn.execute(text(setting))


def _spare(engine: Engine) -> int:
    """How many connections the engine's pool gives now without waiting for one; none from
    a pool that shares one connection (StaticPool, SingletonThreadPool)."""
    pool = engine.pool
    if isinstance(pool, NullPool):
        return MAX_EXTRA_CONNECTIONS
    if not isinstance(pool, QueuePool):
        return 0
    # QueuePool keeps its max_overflow private; -1 is no limit, as is a size of 0.
    overflow = int(getattr(pool, "_max_overflow", 0))
    if overflow < 0 or pool.size() == 0:
        return MAX_EXTRA_CONNECTIONS
    return max(0, pool.size() + overflow - pool.checkedout())


def _importers(engine: Engine, snapshot: str, wanted: int) -> list[Connection]:
    """Up to wanted connections whose transactions read the exported snapshot; fewer if the
    pool or the server refuses one."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        return []
    extras: list[Connection] = []
    for _ in range(wanted):
        try:
            extra = engine.connect()
        except SQLAlchemyError:
            break
        try:
            # The driver has begun the transaction; these come before its first query.
            extra.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            extra.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            _apply_settings(extra)
        except DBAPIError:
            extra.close()
            break
        extras.append(extra)
    return extras


def _drain(workers: list[Connection], tasks: list[Task]) -> list[Any]:
    """The tasks' results, each worker taking the next task when it is free: one thread per
    worker but the last, which runs on the calling thread. The driver waits for the server
    without the GIL, so the statements run at once."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(tasks)):
        todo.put(i)
    results: list[Any] = [None] * len(tasks)
    failed = threading.Event()

    def work(c: Connection) -> None:
        while not failed.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = tasks[i](c)
            except BaseException:
                failed.set()  # the others start no new task
                raise

    with ThreadPoolExecutor(max_workers=len(workers) - 1 or 1) as pool:
        started = [pool.submit(work, c) for c in workers[:-1]]
        work(workers[-1])
        for future in started:
            future.result()
    return results
