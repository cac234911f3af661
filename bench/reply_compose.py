"""What a rich reply costs to build: Markdown to sanitized HTML, and the whole mail with files.

    .venv/bin/python bench/reply_compose.py               # 200 rounds of each
    .venv/bin/python bench/reply_compose.py --rounds 50   # a quick run

An agent's reply is hostile input too (a paste can be anything), so its Markdown must cost
time in proportion to its length. Measured, each against a baseline in the same run:

- `markdown_html` (markdown-it-py, then nh3) on a realistic 2,000-character reply, against
  escaping the same text as HTML (`html.escape`, what a plain reply would need);
- the same at the Markdown limit (inbox.compose.MARKDOWN_MAX, 20,000 characters) of prose,
  and of hostile shapes (runs of `[`, deep `>` quotes, runs of `*`), against prose of the
  same length, so a ratio near 1 means no shape is worse than ordinary text;
- `compose_email` + `serialize` of a reply with HTML, a CC and two files (a 1 MB PDF-like
  blob, a 200 kB image), against the same reply as bare text.

Prints p50 and p99 per case and the ratios, with the load average, then the JSON.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.config import EmailRelaySettings
from connectors.mail.relay import compose_email, serialize
from inbox.compose import MARKDOWN_MAX, html_document, markdown_html
from inbox.outbox import Claimed, OutFile

WORDS = [
    "the",
    "invoice",
    "order",
    "account",
    "password",
    "reset",
    "delivery",
    "parcel",
    "refund",
    "we",
    "have",
    "checked",
    "your",
    "case",
    "and",
    "a",
    "colleague",
    "will",
    "call",
    "you",
    "back",
    "today",
    "thanks",
    "for",
    "your",
    "patience",
]


def prose(length: int, rng: random.Random) -> str:
    parts: list[str] = []
    size = 0
    while size < length:
        line = " ".join(rng.choice(WORDS) for _ in range(12))
        if rng.random() < 0.2:
            line = f"- **{line[:20]}** {line[20:]}"
        parts.append(line)
        size += len(line) + 1
    return "\n".join(parts)[:length]


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def row(body: str, html_part: str | None, files: tuple[OutFile, ...]) -> Claimed:
    payload: dict[str, Any] = {"cc": ["boss@example.org"], "bcc": ["audit@example.net"]}
    if html_part:
        payload["html"] = html_part
    return Claimed(
        id=1,
        case_id=1,
        kind="reply",
        channel="email",
        recipient="kim@example.org",
        subject="Re: Invoice [C-000001 #abc]",
        body=body,
        payload=payload,
        attempts=0,
        message_id_header="parity.C-000001.abc.1@support.example.com",
        created_at=datetime.now(UTC),
        case_reference="C-000001",
        case_token="abc",  # noqa: S106 (a case token, not a password)
        files=files,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(22)
    rounds = args.rounds
    big_rounds = max(5, rounds // 20)
    reply = prose(2000, rng)
    limit = MARKDOWN_MAX
    long_prose = prose(limit, rng)
    hostile = {
        "nested brackets": "[" * (limit // 2) + "x" + "]" * (limit // 2 - 1),
        "deep quotes": "".join("> " * i + "x\n" for i in range(1, 130))[:limit],
        "emphasis runs": ("*a " * limit)[:limit],
    }
    relay = EmailRelaySettings()
    files = (
        OutFile("invoice.pdf", "application/pdf", os.urandom(1_000_000)),
        OutFile("photo.png", "image/png", os.urandom(200_000)),
    )
    results: dict[str, Any] = {}
    results["markdown 2k"] = timed(lambda: markdown_html(reply), rounds)
    results["escape 2k"] = timed(lambda: html.escape(reply), rounds)
    results["markdown 20k prose"] = timed(lambda: markdown_html(long_prose), big_rounds)
    for name, text in hostile.items():
        results[f"markdown 20k {name}"] = timed(lambda t=text: markdown_html(t), big_rounds)  # type: ignore[misc]
    rich = row(reply, html_document(markdown_html(reply)), files)
    plain = row(reply, None, ())
    results["mail rich"] = timed(lambda: serialize(compose_email(rich, relay)), rounds)
    results["mail plain"] = timed(lambda: serialize(compose_email(plain, relay)), rounds)

    def ratio(a: str, b: str) -> float:
        return float(results[a][0] / results[b][0])

    ratios = {
        "markdown/escape (2k)": ratio("markdown 2k", "escape 2k"),
        **{
            f"{name}/prose (20k)": ratio(f"markdown 20k {name}", "markdown 20k prose")
            for name in hostile
        },
        "rich mail with 1.2 MB of files/plain": ratio("mail rich", "mail plain"),
    }
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    for name, (p50, p99) in results.items():
        print(f"{name:34s} p50 {p50 * 1000:9.3f} ms   p99 {p99 * 1000:9.3f} ms")
    for name, value in ratios.items():
        print(f"{name:40s} {value:8.2f}")
    print("load average:", " ".join(load))
    print(
        json.dumps(
            {
                "p50_ms": {k: v[0] * 1000 for k, v in results.items()},
                "p99_ms": {k: v[1] * 1000 for k, v in results.items()},
                "ratios": ratios,
                "load": load,
            }
        )
    )


if __name__ == "__main__":
    main()
