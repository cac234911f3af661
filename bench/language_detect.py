"""The cost of language detection in the parse step, as a ratio against parsing the same
message without it, timed in the same run.

Each of the 200 labelled support messages (tests/fixtures/languages/support_messages.tsv)
is wrapped in a plain mail and parsed by the normalizer's parse step (normalizer/parse.py
`parse`, which detects the language), against the mail parser alone (`parse_email`, no
detection) on the same bytes. The model is loaded before timing, as the parse pool's
forkserver does (normalizer/language_model.py). Also prints the detector's accuracy.

    .venv/bin/python bench/language_detect.py [--runs 5]

Not run by CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.registry import parser_table
from normalizer.language import detect, identifier
from normalizer.mail import Caps, parse_email
from normalizer.parse import parse

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/languages/support_messages.tsv"
AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def sample() -> list[tuple[str, str]]:
    rows = []
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            lang, text = line.split("\t", 1)
            rows.append((lang, text))
    return rows


def mail(n: int, text: str) -> bytes:
    return (
        f"From: Person {n} <p{n}@example.org>\r\nTo: help@example.com\r\nSubject: help\r\n"
        f"Message-ID: <bench-{n}@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
    ).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows = sample()
    raws = [mail(n, text) for n, (_, text) in enumerate(rows)]
    identifier()
    parsers = parser_table()
    caps = Caps()
    envelope = {"mail_from": "", "rcpt_tos": ["help@example.com"]}
    base, full, alone = [], [], []
    texts = [text for _, text in rows]
    for _ in range(args.runs):
        start = time.perf_counter()
        for text in texts:
            detect(text)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        for raw in raws:
            parse_email(raw, envelope=envelope, received_at=AT, caps=caps)
        base.append(time.perf_counter() - start)
        start = time.perf_counter()
        for raw in raws:
            parse("email", raw, envelope=envelope, received_at=AT, caps=caps, parsers=parsers)
        full.append(time.perf_counter() - start)
    b, f, d = statistics.median(base), statistics.median(full), statistics.median(alone)
    correct = sum(detect(text) == lang for lang, text in rows)
    print(f"messages {len(rows)}, runs {args.runs}")
    print(f"mail parser alone   {b / len(rows) * 1e3:.3f} ms per message (median run)")
    print(f"parse with language {f / len(rows) * 1e3:.3f} ms per message (median run)")
    print(f"detection alone     {d / len(rows) * 1e3:.3f} ms per message (median run)")
    print(f"ratio {f / b:.2f} (parse with detection / without)")
    print(f"ratio {d / b:.2f} (detection alone / the mail parser)")
    print(f"accuracy {correct}/{len(rows)}")


if __name__ == "__main__":
    main()
