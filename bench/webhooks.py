"""What the webhook benches share: serving an app on a free port, the same client load, the
store Parity's side writes to, and the printed figures.

Each channel's bench (Twilio, Meta, Telegram, the contact form) builds its own requests and
its own bare handler; both sides of a comparison are then driven by this one client, so the
ratio measures the server and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import aiohttp
from aiohttp import web
from sqlalchemy import Engine, create_engine, func, select, text

from inbox import migrate
from inbox.db import make_engine
from inbox.models import Intake
from inbox.web import create_app
from inbox.web.routes import Route
from normalizer.intake import IntakeWriter, RawInput, Stored

Submit = Callable[[RawInput], Awaitable[Stored]]
PG_ADMIN = os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


async def serve(app: web.Application, path: str) -> tuple[web.AppRunner, str]:
    """Start `app` on a free local port; its runner and the URL of `path` on it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}{path}"


async def load(
    url: str,
    items: Sequence[tuple[bytes, Mapping[str, str]]],
    concurrency: int,
    *,
    expect: int = 200,
) -> float:
    """POST every (body, headers) `concurrency` at a time; requests per second. Anything but
    `expect` stops the run: a bench that counted refusals would measure the wrong thing.
    Redirects are not followed (the form answers 303): only the post is measured."""
    queue: asyncio.Queue[tuple[bytes, Mapping[str, str]]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                async with session.post(
                    url, data=body, headers=dict(headers), allow_redirects=False
                ) as response:
                    await response.read()
                    assert response.status == expect, response.status

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(items) / (time.perf_counter() - started)


async def compare(
    baseline: web.Application,
    ours: web.Application,
    path: str,
    requests: Sequence[tuple[bytes, Mapping[str, str]]],
    concurrency: int,
    *,
    warm_up: int = 200,
    rounds: int = 1,
    expect: int = 200,
) -> dict[str, float]:
    """Requests per second of the bare handler and of Parity on the same requests.

    Each side first takes the `warm_up` requests unmeasured (connections, caches, the store's
    first pages), then the rest, measured; Parity's side gets the same bodies, so the caller
    finds `len(requests)` inputs stored, each once.

    With `rounds` > 1 the rest is cut into that many slices and the two sides take each slice
    one after the other, the first side alternating: on a shared machine whose load changes
    from second to second, a baseline measured seconds before its comparison says little
    about it. The answer then also has `ratio`, the median of the rounds' ratios, and each
    round's as "ratio 1", "ratio 2", ...; the two rates are the medians of each side's rounds.
    Every answer must have the status `expect`.
    """
    sides = (("bare aiohttp", baseline), ("parity", ours))
    if rounds <= 1:
        results: dict[str, float] = {}
        for name, app in sides:
            for items in (requests[:warm_up], requests[warm_up:]):
                runner, url = await serve(app, path)
                # The measured run is last.
                results[name] = await load(url, items, concurrency, expect=expect)
                await runner.cleanup()
        return results
    served = {name: await serve(app, path) for name, app in sides}
    try:
        for name, _ in sides:
            await load(served[name][1], requests[:warm_up], concurrency, expect=expect)
        rest = requests[warm_up:]
        size = len(rest) // rounds
        rates: dict[str, list[float]] = {name: [] for name, _ in sides}
        for index in range(rounds):
            chunk = rest[index * size : (index + 1) * size if index + 1 < rounds else len(rest)]
            order = sides if index % 2 == 0 else sides[::-1]
            for name, _ in order:
                rates[name].append(await load(served[name][1], chunk, concurrency, expect=expect))
    finally:
        for runner, _ in served.values():
            await runner.cleanup()
    ratios = [
        ours_rate / bare
        for ours_rate, bare in zip(rates["parity"], rates["bare aiohttp"], strict=True)
    ]
    answer = {name: statistics.median(found) for name, found in rates.items()}
    answer["ratio"] = statistics.median(ratios)
    answer.update({f"ratio {i + 1}": r for i, r in enumerate(ratios)})
    return answer


@contextmanager
def store_url(db: str = "sqlite") -> Iterator[str]:
    """A fresh store's URL: SQLite in a temporary directory, or a new PostgreSQL database on
    the server of PARITY_TEST_PG (made here and dropped after), as the tests do."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    name = f"parity_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def compare_stored(
    baseline: web.Application,
    routes: Callable[[Engine, Submit], Iterable[Route]],
    path: str,
    requests: Sequence[tuple[bytes, Mapping[str, str]]],
    concurrency: int,
    *,
    db: str = "sqlite",
    warm_up: int = 200,
    rounds: int = 1,
    expect: int = 200,
) -> dict[str, float]:
    """`compare` against the inbox app with `routes(engine, submit)`, as `parity run` mounts
    them, on a fresh migrated store (`store_url`) written through the IntakeWriter (group
    commit); then checks that every request was stored, each once."""
    with store_url(db) as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        writer = IntakeWriter(engine)
        writer.start()
        ours = create_app(engine, routes=routes(engine, writer.submit))
        results = await compare(
            baseline,
            ours,
            path,
            requests,
            concurrency,
            warm_up=warm_up,
            rounds=rounds,
            expect=expect,
        )
        await asyncio.to_thread(writer.stop)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(Intake)).scalar_one()
        engine.dispose()
    assert stored == len(requests), stored
    return results


def print_rates(results: Mapping[str, float], unit: str = "requests/s", rounds: int = 1) -> None:
    """Each side's rate and Parity's ratio to the bare handler (the rounds' when several)."""
    for name in ("bare aiohttp", "parity"):
        print(f"  {name:14s} {results[name]:8.0f} {unit}")
    if rounds > 1:
        each = ", ".join(f"{results[f'ratio {i + 1}']:.2f}" for i in range(rounds))
        print(f"  ratio parity / bare: {results['ratio']:.2f} (median of {rounds} rounds: {each})")
    else:
        print(f"  ratio parity / bare: {results['parity'] / results['bare aiohttp']:.2f}")


Load = tuple[float, float, float]
# Linux recomputes the load average every 5 seconds (LOAD_FREQ; measured here: a change
# every 5.0 s). A run shorter than that read the same figures "after" as "before" (seen
# as "0.73 0.35 0.14 / 0.73 0.35 0.14"): the after sample waits for the next update.
LOAD_PERIOD_S = 5.0


def load_after(
    before: Load,
    sample: Callable[[], Load] = os.getloadavg,
    sleep: Callable[[float], object] = time.sleep,
    step_s: float = 0.25,
) -> Load:
    """The load average after a run: the first figures the kernel computed since `before`
    was read, waiting at most one update period (the same figures if none came)."""
    after = sample()
    for _ in range(int(LOAD_PERIOD_S / step_s) + 2):
        if after != before:
            break
        sleep(step_s)
        after = sample()
    return after


def load_line(before: Load, after: Load) -> str:
    text = " ".join(f"{x:.2f}" for x in before) + " / " + " ".join(f"{x:.2f}" for x in after)
    if after == before:
        text += " (not recomputed since before)"
    return "  load average before / after: " + text


def print_load(before: Load) -> None:
    """The load average before the run (`os.getloadavg()` then) and after it: how shared
    the machine was while the figures were taken."""
    print(load_line(before, load_after(before)))
