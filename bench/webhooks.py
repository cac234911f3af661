"""What the webhook benches share: serving an app on a free port, and the same client load.

Each provider's bench (Twilio, Meta) builds its own signed requests and its own bare
handler; both sides of a comparison are then driven by this one client, so the ratio
measures the server and nothing else.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping, Sequence

import aiohttp
from aiohttp import web


async def serve(app: web.Application, path: str) -> tuple[web.AppRunner, str]:
    """Start `app` on a free local port; its runner and the URL of `path` on it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}{path}"


async def load(
    url: str, items: Sequence[tuple[bytes, Mapping[str, str]]], concurrency: int
) -> float:
    """POST every (body, headers) `concurrency` at a time; requests per second. Anything but
    a 200 stops the run: a bench that counted refusals would measure the wrong thing."""
    queue: asyncio.Queue[tuple[bytes, Mapping[str, str]]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                async with session.post(url, data=body, headers=dict(headers)) as response:
                    await response.read()
                    assert response.status == 200, response.status

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
    """
    sides = (("bare aiohttp", baseline), ("parity", ours))
    if rounds <= 1:
        results: dict[str, float] = {}
        for name, app in sides:
            for items in (requests[:warm_up], requests[warm_up:]):
                runner, url = await serve(app, path)
                results[name] = await load(url, items, concurrency)  # the measured run is last
                await runner.cleanup()
        return results
    served = {name: await serve(app, path) for name, app in sides}
    try:
        for name, _ in sides:
            await load(served[name][1], requests[:warm_up], concurrency)
        rest = requests[warm_up:]
        size = len(rest) // rounds
        rates: dict[str, list[float]] = {name: [] for name, _ in sides}
        for index in range(rounds):
            chunk = rest[index * size : (index + 1) * size if index + 1 < rounds else len(rest)]
            order = sides if index % 2 == 0 else sides[::-1]
            for name, _ in order:
                rates[name].append(await load(served[name][1], chunk, concurrency))
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
