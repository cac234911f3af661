"""Meta inside `parity run`, on SQLite and PostgreSQL, and what `parity connectors status
--json` then says per channel.

The daemon is the real composition (parity/daemon.py) with the meta connector against the
fake Graph API; webhooks go to its own HTTP listener over TCP, signed here with the hmac
module as Meta signs them; the status is the real CLI reading the store the daemon wrote."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import Engine, func, select

from inbox.db import make_engine
from inbox.models import Blob, Case, Intake, Message, Outbox
from parity import cli, daemon
from parity.settings import load
from tests.channels.meta.support import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    WA_TOKEN,
    FakeGraph,
    body_of,
    fake_graph,
    fixture,
    sign,
)
from tests.support.helpers import child_settings
from tests.support.smtp_support import free_port

NUMBER = "+16315551181"  # the fixture's wa_id, in E.164


def write_settings(path: Path, db_url: str, fake: FakeGraph, port: int) -> Path:
    head = child_settings(db_url).replace(
        "[connectors.web]\nenabled = false",
        f'[connectors.web]\nenabled = false\nhost = "127.0.0.1"\nport = {port}',
    )
    path.write_text(
        head
        + f"""
[connectors.meta]
enabled = true
graph_base_url = "{fake.base_url}"
whatsapp_phone_number_id = "{PHONE_NUMBER_ID}"
poll_seconds = 0.2

[outbox]
poll_seconds = 0.2
""",
        encoding="utf-8",
    )
    return path


async def until(what: str, done: Callable[[], Any], task: asyncio.Task[Any]) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        found = await asyncio.to_thread(done)
        if found:
            return found
        assert loop.time() < deadline, f"the daemon did not get there in time: {what}"
        assert not task.done(), task
        await asyncio.sleep(0.1)


def scalar(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def applied(engine: Engine, query: Any) -> Callable[[], bool]:
    return lambda: bool(scalar(engine, query) == "applied")


def listening(d: daemon.Daemon) -> str:
    entry = d.supervised.get("web")
    return str(getattr(entry.connector, "bound", "")) if entry else ""


def meta_status(path: Path, capsys: Any) -> dict[str, Any]:
    capsys.readouterr()
    assert cli.main(["--settings", str(path), "connectors", "status", "--json"]) == 0
    found: dict[str, Any] = next(
        c for c in json.loads(capsys.readouterr().out) if c["name"] == "meta"
    )
    return found


async def test_a_signed_whatsapp_webhook_through_the_daemon(
    db_url: str, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/meta/webhook"
    body = body_of(fixture("wa_text"))
    with fake_graph() as fake:
        monkeypatch.setenv("META_VERIFY_TOKEN", VERIFY_TOKEN)
        monkeypatch.setenv("META_APP_SECRET", APP_SECRET)
        monkeypatch.setenv("META_WHATSAPP_TOKEN", WA_TOKEN)
        monkeypatch.delenv("META_PAGE_TOKEN", raising=False)
        path = write_settings(tmp_path / "settings.toml", db_url, fake, port)
        d = daemon.Daemon(load(path), only=["meta"], heartbeat_s=0.2)
        engine = make_engine(db_url)
        task = asyncio.create_task(d.run())
        try:
            await until("listening", lambda: listening(d), task)
            async with aiohttp.ClientSession() as http:

                async def post(data: bytes, signature: str) -> int:
                    headers = {"Content-Type": "application/json"}
                    headers["X-Hub-Signature-256"] = signature
                    async with http.post(url, data=data, headers=headers) as response:
                        await response.read()
                        return response.status

                # Signed with another app's secret: refused, nothing stored.
                assert await post(body, sign(body, "not-our-app-secret")) == 403
                assert scalar(engine, select(func.count()).select_from(Intake)) == 0
                assert scalar(engine, select(func.count()).select_from(Blob)) == 0

                assert await post(body, sign(body)) == 200
                # The 200 came after the commit: the raw bytes are there, exactly.
                with engine.connect() as conn:
                    row = conn.execute(
                        select(Intake.source_key, Blob.data).join(
                            Blob, Blob.sha256 == Intake.raw_sha256
                        )
                    ).one()
                assert row.data == body
                assert row.source_key.startswith("wa:wamid.")

                # The case, and its acknowledgement sent through the outbox to the fake.
                reference = await until(
                    "a case",
                    lambda: scalar(
                        engine,
                        select(Case.reference).join(Message, Message.case_id == Case.id),
                    ),
                    task,
                )
                await until(
                    "the acknowledgement sent",
                    lambda: (
                        scalar(engine, select(Outbox.state).where(Outbox.kind == "ack")) == "sent"
                    ),
                    task,
                )
                sent_id = scalar(engine, select(Outbox.provider_id))
                assert sent_id == "wamid.SENT0001"
                (path_sent, payload), *_ = fake.received
                assert path_sent == f"/v21.0/{PHONE_NUMBER_ID}/messages"
                assert payload["to"] == NUMBER.lstrip("+")
                assert reference in payload["text"]["body"]

                # Meta's reports on what we sent: delivered, then read; delivered again.
                for state in ("delivered", "read", "delivered"):
                    report = fixture(f"wa_status_{state}")
                    report["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = sent_id
                    raw = body_of(report)
                    assert await post(raw, sign(raw)) == 200
                    key = f"status:{sent_id}:{state}"
                    # Stored raw before the 200, like a message.
                    assert scalar(engine, select(Intake.id).where(Intake.source_key == key))
                    query = select(Intake.state).where(Intake.source_key == key)
                    await until(f"{state} applied", applied(engine, query), task)
                with engine.connect() as conn:
                    box = conn.execute(select(Outbox.state, Outbox.payload)).one()
                assert box.state == "delivered" and box.payload["status"] == "read"

            def shown() -> Any:
                status = meta_status(path, capsys)
                facts = status["instances"][0]["details"]["channels"]["whatsapp"]
                return status if facts.get("outbox") == {"delivered": 1} else None

            status = await until("the status written", shown, task)
        finally:
            d.stop.set()
            await asyncio.wait_for(task, 30)
            engine.dispose()

    assert status["enabled"] is True and status["disabled_reason"] is None
    (instance,) = status["instances"]
    assert instance["restarts"] == 0
    whatsapp = instance["details"]["channels"]["whatsapp"]
    assert whatsapp["last_webhook_received"] is not None
    assert whatsapp["signature_failures"] == 1
    assert whatsapp["token_valid"] is True and "token_error" not in whatsapp
    assert whatsapp["outbox"] == {"delivered": 1}
    # Messenger and Instagram are not configured here: no token was checked for them.
    assert instance["details"]["channels"]["messenger"]["token_valid"] is None
