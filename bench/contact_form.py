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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench.webhooks import compare_stored, print_load, print_rates
from connectors.webform import abuse
from connectors.webform.settings import WebformSettings
from connectors.webform.web import WebForm
from inbox.models import utcnow
from inbox.secrets import Secret

SECRET = "bench-webform-secret-0123456789"  # noqa: S105 (made up: signs local forms)
PATH = "/contact"


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
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    posts = [(body, headers) for body in posts_for(count + warm_up, bits)]
    load_before = os.getloadavg()
    results = await compare_stored(
        baseline_app,
        lambda engine, submit: WebForm(section, engine, Secret(SECRET), submit).routes(),
        PATH,
        posts,
        concurrency,
        db=db,
        warm_up=warm_up,
        expect=303,
    )
    store = "SQLite (WAL, FULL sync)" if db == "sqlite" else "PostgreSQL"
    print(f"{count} contact form posts, {concurrency} at a time, {store}")
    print_rates(results, "posts/s")
    print_load(load_before)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bits", type=int, default=12)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.bits, db=args.db))
