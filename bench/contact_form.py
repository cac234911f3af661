"""Contact form posts per second, stored durably with the proof-of-work check, against a bare
aiohttp handler answering the same way, measured in the same run with the same client load.

Ours: the inbox app with the web form's routes, as `parity run` mounts them: the multipart
body read with its bounds, the form token's HMAC and age checked, the proof-of-work stamp
checked, the fields checked, the rate-limit buckets taken in the store, the post stored
durably through the IntakeWriter (group commit, SQLite WAL with FULL sync, in a temporary
directory), then 303 to the answer page (not followed). The baseline reads the multipart
body and answers 303, storing nothing.

    .venv/bin/python bench/contact_form.py [--requests 1000] [--concurrency 16] [--bits 12]
        [--db sqlite|postgresql]

PostgreSQL: a database of its own is made (and dropped) on the server of PARITY_TEST_PG
(default postgres@127.0.0.1:5432), as the tests do.

Every post is a distinct submission with its own form token and a stamp found before timing
starts (the stamp's cost to the server is one SHA-256 whatever its difficulty).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from sqlalchemy import create_engine, func, select, text

from bench.webhooks import serve
from connectors.webform import abuse
from connectors.webform.settings import WebformSettings
from connectors.webform.web import WebForm
from inbox import migrate
from inbox.db import make_engine
from inbox.models import Intake, utcnow
from inbox.secrets import Secret
from inbox.web import create_app
from normalizer.intake import IntakeWriter

SECRET = "bench-webform-secret-0123456789"  # noqa: S105 (made up: signs local forms)
PATH = "/contact"
PG_ADMIN = os.environ.get("PARITY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def store_url(db: str) -> Iterator[str]:
    """A fresh, migrated store: SQLite in a temporary directory, or a new PostgreSQL database."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    name = f"parity_bench_form_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


BOUNDARY = "----parity-bench-boundary"


def body_of(fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


def posts_for(count: int, bits: int) -> list[bytes]:
    secret = SECRET.encode()
    made = []
    # Issued a minute ago: well inside the token's age limits.
    issued = utcnow().timestamp() - 60
    for i in range(count):
        token = abuse.mint(secret, issued, bits)
        made.append(
            body_of(
                {
                    "form_token": token,
                    "work": abuse.solve(token, bits),
                    "name": f"Person {i}",
                    "email": f"person{i}@example.org",
                    "phone": "",
                    "text": f"Question {i}: I lost access to my account and my email.",
                    "website": "",
                }
            )
        )
    return made


async def load(url: str, bodies: Sequence[bytes], concurrency: int) -> float:
    """POST every body `concurrency` at a time; posts per second. Anything but a 303 stops
    the run: a bench that counted refusals would measure the wrong thing."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    assert response.status == 303, (response.status, await response.text())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


async def main(
    count: int, concurrency: int, bits: int, warm_up: int = 100, db: str = "sqlite"
) -> None:
    async def bare(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            await part.read()  # type: ignore[union-attr]
        raise web.HTTPSeeOther("/contact/received/x")

    baseline_app = web.Application()
    baseline_app.router.add_post(PATH, bare)
    section = WebformSettings(
        enabled=True,
        public_url="https://help.example.com",
        pow_bits=bits,
        pow_max_bits=bits,
        per_address_burst=10**9,
        global_burst=10**9,
        wait_seconds=0,
    )
    print(f"finding {count + warm_up} stamps of {bits} bits ...", flush=True)
    posts = posts_for(count + warm_up, bits)
    load_before = os.getloadavg()
    with store_url(db) as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        writer = IntakeWriter(engine)
        writer.start()
        form = WebForm(section, engine, Secret(SECRET), writer.submit)
        ours_app = create_app(engine, routes=form.routes())
        results: dict[str, float] = {}
        for name, app in (("bare aiohttp", baseline_app), ("parity", ours_app)):
            for items in (posts[:warm_up], posts[warm_up:]):
                runner, url = await serve(app, PATH)
                results[name] = await load(url, items, concurrency)  # the measured run is last
                await runner.cleanup()
        await asyncio.to_thread(writer.stop)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(Intake)).scalar_one()
        engine.dispose()
    assert stored == count + warm_up, stored
    store = "SQLite (WAL, FULL sync)" if db == "sqlite" else "PostgreSQL"
    print(f"{count} contact form posts, {concurrency} at a time, {store}")
    for name, rate in results.items():
        print(f"  {name:14s} {rate:8.0f} posts/s")
    print(f"  ratio parity / bare: {results['parity'] / results['bare aiohttp']:.2f}")
    print(
        "  load average before / after: "
        + " ".join(f"{x:.2f}" for x in load_before)
        + " / "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bits", type=int, default=12)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.bits, db=args.db))
