"""Signed WhatsApp webhooks per second, against a bare aiohttp handler answering 200, measured
in the same run with the same client load.

Ours: the inbox app with the Meta route, as `parity run` mounts it: X-Hub-Signature-256
checked (HMAC-SHA256 of the raw body with the app secret), the body's events found, the raw
body stored durably through the IntakeWriter (group commit, SQLite WAL with FULL sync, in a
temporary directory), then 200. The baseline reads the body and answers 200, storing nothing.

    .venv/bin/python bench/meta_webhooks.py [--requests 2000] [--concurrency 32] [--rounds 1]

With `--rounds N` the two sides take turns on N slices of the requests (bench/webhooks.py
`compare`), and the ratio is the median of the N rounds' ratios: on a loaded machine a
baseline measured seconds apart from its comparison says little about it.

Every request is a distinct message (its own wamid), built and signed before timing starts,
in the shape of Meta's WhatsApp Cloud API text message webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench.webhooks import compare_stored, print_load, print_rates
from connectors.meta.intake import MetaWebhooks
from inbox.secrets import Secret

SECRET = "bench-app-secret-0123456789abcdef"  # noqa: S105 (made up: signs local requests)
PATH = "/meta/webhook"


def requests_for(count: int) -> list[tuple[bytes, str]]:
    made = []
    for i in range(count):
        wa_id = f"1415555{i % 10000:04d}"
        doc = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": "106540352242922",
                                },
                                "contacts": [{"profile": {"name": "Kerry"}, "wa_id": wa_id}],
                                "messages": [
                                    {
                                        "from": wa_id,
                                        "id": f"wamid.BENCH{i:024d}",
                                        "timestamp": "1764504000",
                                        "type": "text",
                                        "text": {"body": f"Question {i}: my account was hacked"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        made.append((body, "sha256=" + digest))
    return made


def headers(signature: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": signature}


async def main(count: int, concurrency: int, rounds: int = 1) -> None:
    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"stored": 1, "events": 1})

    baseline_app = web.Application()
    baseline_app.router.add_post(PATH, bare)
    load_before = os.getloadavg()
    signed = [(body, headers(signature)) for body, signature in requests_for(count + 200)]
    results = await compare_stored(
        baseline_app,
        lambda engine, submit: MetaWebhooks(
            engine, Secret("unused"), Secret(SECRET), submit
        ).routes(),
        PATH,
        signed,
        concurrency,
        rounds=rounds,
    )
    print(f"{count} signed WhatsApp webhooks, {concurrency} at a time, SQLite (WAL, FULL sync)")
    print_rates(results, rounds=rounds)
    print_load(load_before)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.rounds))
