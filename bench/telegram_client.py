"""python-telegram-bot or the Bot API over aiohttp: the measurements behind the choice
(docs/channels/telegram.md). Each figure is a ratio against aiohttp's, measured in the same
run against the same local fake Bot API.

    .venv/bin/python bench/telegram_client.py [--ptb-python PYTHON] [--calls 300]

- import: the seconds a fresh interpreter takes to import the client (the median of 7), and
  the resident memory it then holds (its resident set less a bare interpreter's);
- updates per second: `--calls` getUpdates of 100 updates each, made one after another
  against the fake, every update turned into what the connector uses: python-telegram-bot's
  `Update` objects, or our routing of the raw update (connectors.telegram.intake.raw_input);
- dependency weight: the distributions each one adds to this project's (aiohttp is one
  already), read from the interpreter's installed metadata.

python-telegram-bot is not a dependency of Parity: `--ptb-python` names an interpreter that
has it installed (its own virtual environment); without one, only aiohttp is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench.webhooks import print_load, serve

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "1000001:bench-token-for-the-local-fake"  # noqa: S105 (made up)
BATCH = 100

IMPORT = textwrap.dedent(
    """
    import sys, time
    started = time.perf_counter()
    if sys.argv[1] != "none":
        __import__(sys.argv[1])
    took = time.perf_counter() - started
    # The resident set now (kB): ru_maxrss would carry the parent's peak across fork+exec.
    with open("/proc/self/status") as status:
        rss = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
    print(took, rss)
    """
)

FETCH_PTB = textwrap.dedent(
    """
    import asyncio, sys, time
    import telegram

    async def main(base, calls):
        bot = telegram.Bot(sys.argv[3], base_url=base + "/bot")
        async with bot:
            started = time.perf_counter()
            handled = 0
            for _ in range(calls):
                updates = await bot.get_updates(limit=100, timeout=0)
                handled += sum(1 for u in updates if u.message and u.message.chat.type == "private")
            print(handled / (time.perf_counter() - started))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

FETCH_OURS = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from connectors.telegram.api import BotApi
    from connectors.telegram.intake import raw_input
    from connectors.telegram.settings import TelegramSettings
    from inbox.secrets import Secret

    async def main(base, calls):
        api = BotApi(TelegramSettings(api_base_url=base), Secret(sys.argv[3]))
        started = time.perf_counter()
        handled = 0
        for _ in range(calls):
            updates = await api.get_updates(None, 100, 0)
            for update in updates:
                payload = json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()
                item, _ = raw_input(payload)
                handled += item is not None
        print(handled / (time.perf_counter() - started))
        await api.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

# The distributions python-telegram-bot 22 needs beyond what Parity already has.
DEPENDENCY_LIST = textwrap.dedent(
    """
    import importlib.metadata as md, re, sys
    seen, todo = set(), [sys.argv[1]]
    while todo:
        name = re.split(r"[ ;<>=!~\\[]", todo.pop())[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [r for r in requires if "extra ==" not in r]
    print(" ".join(sorted(seen)))
    """
)


def updates(count: int) -> list[dict[str, Any]]:
    return [
        {
            "update_id": 500_000_000 + i,
            "message": {
                "message_id": 1 + i,
                "from": {"id": 7_000_000_000 + i, "is_bot": False, "first_name": "Kerry"},
                "chat": {"id": 7_000_000_000 + i, "first_name": "Kerry", "type": "private"},
                "date": 1764504000,
                "text": f"Question {i}: my account was hacked",
            },
        }
        for i in range(count)
    ]


class Fake:
    """A Bot API answering getMe and getUpdates (always the same 100 updates)."""

    def __init__(self) -> None:
        self.body = json.dumps({"ok": True, "result": updates(BATCH)}).encode()
        self.base_url = ""
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None

    async def method(self, request: web.Request) -> web.Response:
        await request.read()
        if request.match_info["method"] == "getMe":
            me = {"id": 1000001, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
            return web.json_response({"ok": True, "result": me})
        return web.Response(body=self.body, content_type="application/json")

    def start(self) -> None:
        async def up() -> None:
            app = web.Application()
            app.router.add_route("*", "/bot{token}/{method}", self.method)
            self.runner, self.base_url = await serve(app, "")

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def run(python: str, script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [python, "-c", script, *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def imported(python: str, module: str, rounds: int = 7) -> tuple[float, float]:
    """(median seconds to import, MiB of resident memory above a bare interpreter's)."""
    times, rss = [], []
    for _ in range(rounds):
        took, peak = run(python, IMPORT, module).split()
        bare = run(python, IMPORT, "none").split()[1]
        times.append(float(took))
        rss.append((int(peak) - int(bare)) / 1024)
    return statistics.median(times), statistics.median(rss)


def main(ptb_python: str | None, calls: int) -> None:
    load_before = os.getloadavg()
    ours = sys.executable
    rows: dict[str, dict[str, float]] = {}
    seconds, mib = imported(ours, "aiohttp")
    rows["aiohttp"] = {"import_s": seconds, "rss_mib": mib}
    if ptb_python:
        seconds, mib = imported(ptb_python, "telegram")
        rows["python-telegram-bot"] = {"import_s": seconds, "rss_mib": mib}
    fake = Fake()
    fake.start()
    try:
        rate = float(run(ours, FETCH_OURS, fake.base_url, str(calls), TOKEN))
        rows["aiohttp"]["updates_s"] = rate
        if ptb_python:
            rate = float(run(ptb_python, FETCH_PTB, fake.base_url, str(calls), TOKEN))
            rows["python-telegram-bot"]["updates_s"] = rate
    finally:
        fake.stop()
    print(f"{calls} getUpdates of {BATCH} updates each, against a local fake Bot API")
    base = rows["aiohttp"]
    for name, row in rows.items():
        ratio = row["import_s"] / base["import_s"]
        print(
            f"  {name:20s} import {row['import_s'] * 1000:6.0f} ms ({ratio:.2f}x)"
            f"  memory +{row['rss_mib']:5.1f} MiB ({row['rss_mib'] / base['rss_mib']:.2f}x)"
            f"  {row['updates_s']:8.0f} updates/s ({row['updates_s'] / base['updates_s']:.2f}x)"
        )
    if ptb_python:
        needed = set(run(ptb_python, DEPENDENCY_LIST, "python-telegram-bot").split())
        have = set(run(ours, DEPENDENCY_LIST, "parity").split())
        print("  python-telegram-bot adds: " + (" ".join(sorted(needed - have)) or "nothing"))
    print_load(load_before)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptb-python", help="an interpreter with python-telegram-bot installed")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    main(args.ptb_python, args.calls)
