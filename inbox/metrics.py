"""Prometheus metrics derived from the store at scrape time.

Every instance (SMTP, pollers, web) writes to the same database, so counters kept in one
process's memory would each tell a part of the truth and reset on restart. Instead a
custom collector runs a few aggregate queries per scrape: any web instance reports the
same figures, and they survive restarts. Only counts and durations: no customer data.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, Engine, case, func, select

from inbox.db import is_sqlite, read
from inbox.models import (
    Case,
    ConnectorState,
    DeadLetter,
    Intake,
    Message,
    Outbox,
    OutboxAttempt,
    utcnow,
)

# Seconds: intake is milliseconds to seconds; acknowledgements wait for the relay.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
OUTBOX_STATES = ("queued", "sending", "sent", "delivered", "failed", "undelivered", "unknown")
CASE_STATUSES = ("new", "open", "pending_customer", "resolved")
PARITY_WINDOW = timedelta(days=30)
# A normalizer worker's heartbeat older than this means its process is gone: three beats
# (parity/status.py STALE_AFTER, which this layer cannot import).
WORKER_STALE_AFTER = timedelta(seconds=15)


def seconds_between(conn: Connection, start: Any, end: Any) -> ColumnElement[Any]:
    """`end - start` in seconds, in either dialect's SQL."""
    if is_sqlite(conn):
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def histogram_row(
    conn: Connection, seconds: ColumnElement[Any], *where: Any
) -> tuple[list[int], int, float]:
    """Cumulative bucket counts, total count and sum of `seconds` over the rows matched."""
    columns = [func.sum(case((seconds <= b, 1), else_=0)) for b in LATENCY_BUCKETS]
    row = conn.execute(select(func.count(), func.sum(seconds), *columns).where(*where)).one()
    count, total = int(row[0] or 0), float(row[1] or 0.0)
    return [int(v or 0) for v in row[2:]], count, total


def histogram(
    name: str, doc: str, buckets: list[int], count: int, total: float
) -> HistogramMetricFamily:
    pairs = [(repr(b), c) for b, c in zip(LATENCY_BUCKETS, buckets, strict=True)]
    pairs.append(("+Inf", count))
    return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=total)


def parity_ratio(medians: dict[str, float]) -> float | None:
    """Worst channel's median first response over the best one's: 1.0 is parity."""
    values = [v for v in medians.values() if v > 0]
    if len(values) < 2:
        return None
    return max(values) / min(values)


def first_response_medians(conn: Connection, since: Any) -> dict[str, float]:
    seconds = seconds_between(conn, Case.first_inbound_at, Case.first_response_at)
    rows = conn.execute(
        select(Case.channel, seconds).where(
            Case.first_response_at.is_not(None), Case.first_inbound_at >= since
        )
    ).all()
    by_channel: dict[str, list[float]] = {}
    for channel, value in rows:
        by_channel.setdefault(channel, []).append(max(0.0, float(value)))
    return {c: statistics.median(v) for c, v in by_channel.items()}


def _by(conn: Connection, statement: Any) -> dict[Any, int]:
    return {row[0]: int(row[1]) for row in conn.execute(statement)}


class StoreCollector(Collector):
    """Yields every metric from aggregate queries against the shared store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with read(self.engine) as conn:
            yield from self._collect(conn)

    def _collect(self, conn: Connection) -> Iterator[Metric]:
        now = utcnow()
        inbound = CounterMetricFamily(
            "parity_messages_in", "Inbound messages stored, per channel.", labels=["channel"]
        )
        for channel, count in conn.execute(
            select(Message.channel, func.count())
            .where(Message.direction == "inbound")
            .group_by(Message.channel)
        ):
            inbound.add_metric([channel], count)
        yield inbound

        # A dedup hit: an intake row the normalizer found to be a message it already had
        # (the same mail by IMAP and SMTP, a redelivered webhook). Byte-identical repeats
        # from one connector never become intake rows and are not counted here.
        done = conn.execute(
            select(func.count(), func.count(Intake.message_id.distinct())).where(
                Intake.state == "done", Intake.message_id.is_not(None)
            )
        ).one()
        yield CounterMetricFamily(
            "parity_dedup_hits",
            "Stored inputs recognised as a message already stored.",
            value=int(done[0]) - int(done[1]),
        )
        dead = CounterMetricFamily(
            "parity_dead_letters", "Inputs set aside as dead letters.", labels=["channel"]
        )
        for channel, count in conn.execute(
            select(DeadLetter.channel, func.count()).group_by(DeadLetter.channel)
        ):
            dead.add_metric([channel], count)
        yield dead
        yield GaugeMetricFamily(
            "parity_intake_pending",
            "Stored input waiting for the normalizer.",
            value=conn.execute(
                select(func.count()).select_from(Intake).where(Intake.state == "pending")
            ).scalar_one(),
        )

        yield GaugeMetricFamily(
            "parity_normalizer_processes",
            "Normalizer worker processes running, on every node (their heartbeats).",
            value=conn.execute(
                select(func.count())
                .select_from(ConnectorState)
                .where(
                    ConnectorState.connector == "normalizer",
                    ConnectorState.running.is_(True),
                    ConnectorState.heartbeat_at > now - WORKER_STALE_AFTER,
                )
            ).scalar_one(),
        )

        outbox = GaugeMetricFamily("parity_outbox", "Outbox rows by state.", labels=["state"])
        by_state = _by(conn, select(Outbox.state, func.count()).group_by(Outbox.state))
        for state in OUTBOX_STATES:
            outbox.add_metric([state], by_state.get(state, 0))
        yield outbox
        yield GaugeMetricFamily(
            "parity_outbox_depth",
            "Outbox rows waiting to be sent (queued or being sent).",
            value=by_state.get("queued", 0) + by_state.get("sending", 0),
        )
        failures = CounterMetricFamily(
            "parity_outbox_failures",
            "Failed send attempts (retried or given up), per outcome.",
            labels=["outcome"],
        )
        attempts = _by(
            conn,
            select(OutboxAttempt.outcome, func.count())
            .where(OutboxAttempt.outcome != "sent")
            .group_by(OutboxAttempt.outcome),
        )
        for outcome in ("retry", "failed", "unknown"):
            failures.add_metric([outcome], attempts.get(outcome, 0))
        yield failures

        cases = GaugeMetricFamily("parity_cases", "Cases by status.", labels=["status"])
        statuses = _by(conn, select(Case.status, func.count()).group_by(Case.status))
        for status in CASE_STATUSES:
            cases.add_metric([status], statuses.get(status, 0))
        yield cases
        yield GaugeMetricFamily(
            "parity_cases_leased",
            "Cases an agent holds a live lease on.",
            value=conn.execute(
                select(func.count())
                .select_from(Case)
                .where(Case.claimed_by.is_not(None), Case.lease_until > now)
            ).scalar_one(),
        )

        intake_s = seconds_between(conn, Intake.received_at, Intake.processed_at)
        yield histogram(
            "parity_intake_latency_seconds",
            "From receipt (stored) to the message filed in its case.",
            *histogram_row(
                conn, intake_s, Intake.state == "done", Intake.processed_at.is_not(None)
            ),
        )
        ack_s = seconds_between(conn, Case.created_at, Outbox.sent_at)
        yield histogram(
            "parity_ack_latency_seconds",
            "From the case opened to its acknowledgement handed to the channel.",
            *_joined_histogram(conn, ack_s),
        )

        medians = first_response_medians(conn, now - PARITY_WINDOW)
        first = GaugeMetricFamily(
            "parity_first_response_median_seconds",
            "Median first response per channel over 30 days.",
            labels=["channel"],
        )
        for channel, value in sorted(medians.items()):
            first.add_metric([channel], value)
        yield first
        ratio = parity_ratio(medians)
        if ratio is not None:
            yield GaugeMetricFamily(
                "parity_ratio",
                "Worst channel's median first response over the best's, 30 days (1 = parity).",
                value=ratio,
            )


def _joined_histogram(
    conn: Connection, seconds: ColumnElement[Any]
) -> tuple[list[int], int, float]:
    columns: Sequence[Any] = [func.sum(case((seconds <= b, 1), else_=0)) for b in LATENCY_BUCKETS]
    row = conn.execute(
        select(func.count(), func.sum(seconds), *columns)
        .select_from(Outbox)
        .join(Case, Case.id == Outbox.case_id)
        .where(Outbox.kind == "ack", Outbox.sent_at.is_not(None))
    ).one()
    count, total = int(row[0] or 0), float(row[1] or 0.0)
    return [int(v or 0) for v in row[2:]], count, total
