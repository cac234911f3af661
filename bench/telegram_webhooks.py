"""Telegram webhook updates per second, against a bare aiohttp handler answering 200,
measured in the same run with the same client load.

Ours: the inbox app with the Telegram route, as `parity run` mounts it in webhook mode:
X-Telegram-Bot-Api-Secret-Token compared in constant time, the update routed (private chat,
its chat and message ids), the raw body stored durably through the IntakeWriter (group
commit, SQLite WAL with FULL sync, in a temporary directory), then 200. The baseline reads
the body and answers 200, storing nothing.

    .venv/bin/python bench/telegram_webhooks.py [--requests 2000] [--concurrency 32]

Every request is a distinct private text message (its own update and message id), built
before timing starts, in the shape of the Bot API's `Update`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench.webhooks import compare_stored, print_load, print_rates
from connectors.telegram.intake import PATH, SECRET_HEADER, TelegramWebhook
from connectors.telegram.settings import TelegramSettings
from inbox.secrets import Secret

SECRET = "bench-webhook-secret_0123456789"  # noqa: S105 (made up: guards local requests)
TOKEN = "1000001:bench-token-not-used-for-any-request"  # noqa: S105 (made up)


def updates_for(count: int) -> list[bytes]:
    made = []
    for i in range(count):
        person = 7_000_000_000 + i % 10_000
        update = {
            "update_id": 900_000_000 + i,
            "message": {
                "message_id": 1 + i // 10_000,
                "from": {"id": person, "is_bot": False, "first_name": "Kerry"},
                "chat": {"id": person, "first_name": "Kerry", "type": "private"},
                "date": 1764504000,
                "text": f"Question {i}: my account was hacked",
            },
        }
        made.append(json.dumps(update, separators=(",", ":")).encode())
    return made


async def main(count: int, concurrency: int) -> None:
    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"stored": 1})

    baseline_app = web.Application()
    baseline_app.router.add_post(PATH, bare)
    load_before = os.getloadavg()
    headers = {"Content-Type": "application/json", SECRET_HEADER: SECRET}
    bodies = [(body, headers) for body in updates_for(count + 200)]
    results = await compare_stored(
        baseline_app,
        lambda engine, submit: TelegramWebhook(
            TelegramSettings(mode="webhook"), engine, Secret(TOKEN), Secret(SECRET), submit
        ).routes(),
        PATH,
        bodies,
        concurrency,
    )
    print(f"{count} Telegram webhook updates, {concurrency} at a time, SQLite (WAL, FULL sync)")
    print_rates(results)
    print_load(load_before)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
