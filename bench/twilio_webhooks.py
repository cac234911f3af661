"""Signed Twilio SMS webhooks per second, against a bare aiohttp handler returning the same
TwiML, measured in the same run with the same client load.

Ours: the inbox app with the Twilio routes, as `parity run` mounts it: signature check
(RequestValidator over public_url + path), the raw form post stored durably through the
IntakeWriter (group commit, SQLite WAL with FULL sync, in a temporary directory), then 200
with TwiML. The baseline reads the body and returns the same TwiML, storing nothing.

    .venv/bin/python bench/twilio_webhooks.py [--requests 2000] [--concurrency 32]

Every request is a distinct message (its own MessageSid), signed before timing starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from bench.webhooks import compare_stored, print_load, print_rates
from connectors.twilio.intake import TwilioWebhooks
from connectors.twilio.settings import TwilioSettings
from inbox.secrets import Secret

TOKEN = "bench-auth-token-0123456789abcdef"  # noqa: S105 (made up: signs local requests)
PUBLIC = "https://support.example.com"


def requests_for(count: int) -> list[tuple[bytes, str]]:
    validator = RequestValidator(TOKEN)
    made = []
    for i in range(count):
        params = {
            "MessageSid": f"SM{i:032x}",
            "SmsSid": f"SM{i:032x}",
            "AccountSid": "AC" + "0" * 32,
            "From": f"+1415555{i % 10000:04d}",
            "To": "+14155550100",
            "Body": f"Question number {i}: where is my order?",
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        made.append(
            (
                urlencode(params).encode(),
                validator.compute_signature(PUBLIC + "/twilio/sms", params),
            )
        )
    return made


def headers(signature: str) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}


async def main(count: int, concurrency: int) -> None:
    twiml = str(MessagingResponse())

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=twiml, content_type="application/xml")

    baseline_app = web.Application()
    baseline_app.router.add_post("/twilio/sms", bare)
    load_before = os.getloadavg()
    settings = TwilioSettings(enabled=True, public_url=PUBLIC)
    signed = [(body, headers(signature)) for body, signature in requests_for(count + 200)]
    results = await compare_stored(
        baseline_app,
        lambda engine, submit: TwilioWebhooks(settings, engine, Secret(TOKEN), submit).routes(),
        "/twilio/sms",
        signed,
        concurrency,
    )
    print(f"{count} signed SMS webhooks, {concurrency} at a time, SQLite (WAL, FULL sync)")
    print_rates(results)
    print_load(load_before)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
