"""`parity run` in webhook mode: the route joins the HTTP listener, the secret is checked,
updates are stored, filed and acknowledged through the outbox; the status says "webhook"."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from inbox.models import Intake, Outbox
from tests.channels.telegram.support import SECRET, TOKEN, body_of, fake_bot_api, fixture
from tests.support.helpers import child_env, child_settings
from tests.test_takeover import Child, states, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def post(url: str, body: bytes, secret: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def count(engine: Engine, model: type, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def test_parity_run_serves_the_webhook_and_acknowledges_through_the_outbox(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    with fake_bot_api() as fake:
        path = tmp_path / "settings.toml"
        path.write_text(
            child_settings(db_url).replace(
                "[connectors.web]\nenabled = false",
                f'[connectors.web]\nenabled = true\nport = {port}\npublic_url = "http://127.0.0.1:{port}"',
            )
            + f"""
[connectors.telegram]
enabled = true
mode = "webhook"
api_base_url = "{fake.base_url}"
timeout_s = 5.0
"""
        )
        env = {**child_env(), "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET}
        child = Child(path, "telegram", tmp_path / "child.log", env)
        try:

            def listening() -> bool:
                try:
                    return post(url, b"{}", "wrong") == 403
                except OSError:
                    return False

            wait_for(listening, 60, "the listener", [child])
            assert post(url, body_of(fixture("text")), None) == 403
            assert count(engine, Intake) == 0
            assert post(url, body_of(fixture("text")), SECRET) == 200
            assert post(url, body_of(fixture("text")), SECRET) == 200  # redelivered
            assert count(engine, Intake) == 1

            def acknowledged() -> bool:
                return count(engine, Outbox, Outbox.state == "sent") == 1

            wait_for(acknowledged, 60, "the acknowledgement sent", [child])

            def status() -> bool:
                # What `parity connectors status` shows: the mode, and the refused posts
                # (the listener probe's and the one without the header, at least).
                found = states(engine, "telegram", json.dumps).values()
                details = [json.loads(d) for d in found]
                return any(
                    d.get("mode") == "webhook" and d.get("bad_secret", 0) >= 2 for d in details
                )

            wait_for(status, 30, "the status", [child])
        finally:
            child.stop()
        sent = list(fake.sent)
    assert [m["chat_id"] for m in sent] == [718293645]
