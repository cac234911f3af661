"""The poller base: the lock and standby, disabling, pauses, waits, checkpoints with the data.

A tiny poller over a local fake source runs on the real poller lock (an advisory lock on
PostgreSQL, a lock file beside SQLite) and the real intake store, on both databases.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from connectors.poller import (
    AuthFailed,
    Disable,
    Fatal,
    Paused,
    Poller,
    RateLimited,
    Retry,
    Step,
    Transient,
    Verdict,
    next_step,
    retry_after,
    sleep_or_stop,
)
from connectors.poller_lock import PollerLock
from inbox.models import Intake
from normalizer.intake import CheckpointUpdate, RawInput, load_checkpoint

# --- the rule from verdict to step -------------------------------------------------------------


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


DISABLING = Retry(base_s=2.0, cap_s=60.0)
RETRYING = Retry(base_s=2.0, cap_s=60.0, auth_retry_s=300.0)


@pytest.mark.parametrize(
    ("verdict", "failures", "policy", "rand", "expected"),
    [
        # Bad credentials: disabled for good, or retried slowly (300 s +- 10%).
        (AuthFailed("401"), 1, DISABLING, 0.5, Step("disabled", None, "401")),
        (AuthFailed("no"), 1, RETRYING, 0.0, Step("auth failed", 270.0, "no")),
        (AuthFailed("no"), 1, RETRYING, 1.0, Step("auth failed", 330.0, "no")),
        # A 429 with a reset time waits until then (now = 1000), never a negative wait.
        (
            RateLimited(until=1042.5),
            1,
            DISABLING,
            0.5,
            Step("waiting_rate_limit", 42.5, "rate limit reached"),
        ),
        (
            RateLimited(until=990.0),
            1,
            DISABLING,
            0.5,
            Step("waiting_rate_limit", 0.0, "rate limit reached"),
        ),
        (
            RateLimited(after=7.0, reason="429"),
            1,
            DISABLING,
            0.5,
            Step("waiting_rate_limit", 7.0, "429"),
        ),
        # Neither: the backoff curve, 3rd failure: ceiling 2 * 2**2 = 8, half fixed.
        (RateLimited(), 3, DISABLING, 0.0, Step("waiting_rate_limit", 4.0, "rate limit reached")),
        (
            Paused("credits depleted", 3600.0),
            1,
            DISABLING,
            0.5,
            Step("paused", 3600.0, "credits depleted"),
        ),
        (Fatal("forbidden"), 1, DISABLING, 0.5, Step("disabled", None, "forbidden")),
        # Transient: equal jitter. 1st failure ceiling 2, 5th 32, 10th capped at 60.
        (Transient("reset"), 1, DISABLING, 0.0, Step("error", 1.0, "reset")),
        (Transient("reset"), 1, DISABLING, 1.0, Step("error", 2.0, "reset")),
        (Transient("reset"), 5, DISABLING, 0.5, Step("error", 24.0, "reset")),
        (Transient("reset"), 10, DISABLING, 1.0, Step("error", 60.0, "reset")),
    ],
)
def test_each_verdict_has_one_next_step(
    verdict: Verdict, failures: int, policy: Retry, rand: float, expected: Step
) -> None:
    step = next_step(verdict, failures, policy, now=1000.0, rand=fixed(rand))
    assert step.state == expected.state and step.reason == expected.reason
    if expected.wait_s is None:
        assert step.wait_s is None
    else:
        assert step.wait_s is not None and math.isclose(step.wait_s, expected.wait_s)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "0"}, 1.0),  # never a busy loop
        ({"retry-after": "5000"}, 600.0),  # capped
        ({"x-ratelimit-reset": "31.4"}, 31.4),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT", "x-ratelimit-reset": "9"}, 9.0),
        ({"retry-after": "-3", "x-ratelimit-reset": "4"}, 4.0),
    ],
)
def test_a_429_waits_for_retry_after_or_the_reset(headers: dict[str, str], expected: float) -> None:
    assert retry_after(headers, 1, 600.0) == expected


def test_a_429_without_a_hint_backs_off_within_its_window() -> None:
    for attempt in (1, 2, 3, 8):
        wait = retry_after({}, attempt, 100.0)
        assert min(100.0, 2.0**attempt) <= wait <= min(100.0, 2.0**attempt * 1.5)


# --- a tiny poller over a fake source ----------------------------------------------------------


class FakeSource:
    """Numbered items; `fail` makes the next fetches raise what the test chooses."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.fetches = 0
        self.fail: list[BaseException] = []

    def fetch(self, after: int) -> list[int]:
        self.fetches += 1
        if self.fail:
            raise self.fail.pop(0)
        return [n for n in self.items if n > after]


class Refused(Exception):
    pass


class Throttled(Exception):
    pass


class ListPoller(Poller):
    """What a connector keeps: what to fetch, its raw input, how to classify an error."""

    name = "fake"

    def __init__(self, engine: Engine, source: FakeSource, instance: str) -> None:
        super().__init__(engine, "fake", standby_retry_seconds=0.05, label=f"fake {instance}")
        self.source = source
        self.instance = instance
        self.rounds = 0
        self.steps: list[Step] = []

    def classify(self, exc: BaseException) -> Verdict:
        if isinstance(exc, Refused):
            return AuthFailed(f"authentication failed: {exc}")
        if isinstance(exc, Throttled):
            return RateLimited(after=0.0)
        return super().classify(exc)

    def extras(self) -> dict[str, Any]:
        return {"instance": self.instance, "rounds": self.rounds}

    def raw(self, n: int) -> RawInput:
        return RawInput("fake", "email", f"fake:{n}", f"item {n}".encode(), {"n": n})

    def round(self) -> None:
        saved = load_checkpoint(self.engine, "fake", "items") or {}
        found = self.source.fetch(int(saved.get("last", 0)))
        if found:
            checkpoint = CheckpointUpdate("fake", "items", {"last": max(found)})
            self.commit([self.raw(n) for n in found], [checkpoint])
        self.rounds += 1

    async def serve(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.round)
                failures = 0
                wait = 0.02
            except Exception as exc:
                failures += 1
                step = next_step(self.classify(exc), failures, Retry(0.01, 0.05), 0.0)
                self.steps.append(step)
                if step.wait_s is None:
                    raise Disable(step.reason) from exc
                wait = step.wait_s
            self.publish()
            if await sleep_or_stop(wait, stop):
                return


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not condition():  # noqa: ASYNC110 - plain attributes, nothing to await on
            await asyncio.sleep(0.01)


def stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(Intake.source_key)).scalars())


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Intake)).scalar_one())


async def test_one_instance_polls_the_other_stands_by_then_takes_over(engine: Engine) -> None:
    source = FakeSource()
    source.items = [1, 2, 3]
    first, second = ListPoller(engine, source, "a"), ListPoller(engine, source, "b")
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(first.run(stop_first))
    await until(lambda: first.state == "running" and first.rounds > 0)
    standby = asyncio.create_task(second.run(stop_second))
    await until(lambda: second.state == "standby")
    assert second.health.details["reason"] == "another instance holds the poller lock"
    assert second.rounds == 0  # a standby fetches nothing
    assert first.health.details["state"] == "running" and first.health.details["instance"] == "a"

    stop_first.set()
    await running
    source.items += [4, 5]
    await until(lambda: count(engine) == 5)
    assert second.state == "running" and second.rounds > 0
    stop_second.set()
    await standby
    assert stored(engine) == [f"fake:{n}" for n in (1, 2, 3, 4, 5)]  # each once
    assert load_checkpoint(engine, "fake", "items") == {"last": 5}


async def test_bad_credentials_disable_once_and_free_the_lock(engine: Engine) -> None:
    source = FakeSource()
    source.fail = [Refused("invalid_grant")]
    poller = ListPoller(engine, source, "a")
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await until(lambda: poller.state == "disabled")
    details = poller.health.details
    assert details["state"] == "disabled"
    assert details["reason"] == "authentication failed: invalid_grant"
    assert poller.health.last_error == details["reason"]
    # The lock is free for a standby, and the poller waits rather than returning (a return
    # would be a crash for the daemon, and its restart would ask with the same credentials).
    other = PollerLock(engine, "fake")
    await until(other.try_acquire)
    other.release()
    await asyncio.sleep(0.2)
    assert not task.done() and source.fetches == 1
    stop.set()
    await task


async def test_rate_limits_and_transient_errors_wait_and_lose_nothing(engine: Engine) -> None:
    source = FakeSource()
    source.items = [1, 2]
    source.fail = [Throttled(), ConnectionResetError("reset"), OSError("unreachable")]
    poller = ListPoller(engine, source, "a")
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await until(lambda: count(engine) == 2)
    stop.set()
    await task
    assert [s.state for s in poller.steps] == ["waiting_rate_limit", "error", "error"]
    # The second and third failures in a row: ceilings 0.02 and 0.04 s, half of each fixed.
    assert 0.01 <= poller.steps[1].wait_s <= 0.02  # type: ignore[operator]
    assert 0.02 <= poller.steps[2].wait_s <= 0.04  # type: ignore[operator]
    assert stored(engine) == ["fake:1", "fake:2"]


def test_a_checkpoint_commits_with_its_data_or_not_at_all(engine: Engine) -> None:
    poller = ListPoller(engine, FakeSource(), "a")
    items = [poller.raw(1), poller.raw(2)]
    # A checkpoint the store cannot write fails the whole transaction: no item without it.
    with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises
        poller.commit(items, [CheckpointUpdate("fake", "items", {"last": object()})])
    assert count(engine) == 0 and load_checkpoint(engine, "fake", "items") is None
    results = poller.commit(items, [CheckpointUpdate("fake", "items", {"last": 2})])
    assert [r.duplicate for r in results] == [False, False]
    assert load_checkpoint(engine, "fake", "items") == {"last": 2}
    assert poller.commit([], []) == []


async def test_a_pause_holds_until_it_has_run_its_course(engine: Engine) -> None:
    poller = ListPoller(engine, FakeSource(), "a")
    poller.pause("credits depleted: no credits", 3600.0)
    details = poller.health.details
    assert (details["state"], details["reason"]) == ("paused", "credits depleted: no credits")
    assert details["paused_until"] is not None
    poller.resume()  # a request under way when the pause began does not end it
    assert poller.state == "paused"
    stop = asyncio.Event()
    stop.set()
    assert await poller.wait_out_pause(stop)  # asked to stop while paused
    poller.paused_until = 0.0  # the pause has run its course
    assert not await poller.wait_out_pause(stop)
    poller.resume()
    poller.publish()
    assert poller.health.details["state"] == "running"
    assert poller.health.details["paused_until"] is None
