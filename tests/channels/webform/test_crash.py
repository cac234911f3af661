"""`parity run` with the web form, SIGKILLed while form posts arrive, on SQLite and
PostgreSQL: every post that got its 303 is stored, and a post resent after the kill (the
same body: a browser repeating an unanswered request) is stored once, not twice."""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from inbox.db import make_engine
from inbox.models import Case, Identity, Intake, Message
from tests.support.smtp_support import (
    ParityProcess,
    free_port,
    running,
    wait_until_normalized,
    write_settings,
)

SECRET = "crash-test-webform-secret-42"
BOUNDARY = "----parity-crash-test"
BITS = 8


def multipart(fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


def stamp(token: str, bits: int) -> str:
    n = 0
    while int.from_bytes(hashlib.sha256(f"{token}:{n:x}".encode()).digest(), "big") >> (256 - bits):
        n += 1
    return format(n, "x")


def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_sigkill_while_posting_loses_nothing_answered_and_doubles_nothing(db_url, tmp_path):
    web_port = free_port()
    settings = write_settings(
        tmp_path / "settings.toml",
        {
            "database": {"url": db_url, "url_env": "PARITY_TEST_NO_SUCH_VARIABLE"},
            "normalizer": {"lease_seconds": 5},
            "logging": {"level": "INFO"},
            "connectors.smtp": {"enabled": False},
            "connectors.web": {"port": web_port},
            "connectors.webform": {
                "enabled": True,
                "public_url": "https://help.example.com",
                "pow_bits": BITS,
                "pow_max_bits": BITS,
                "nojs_min_fill_seconds": 0,
                "per_address_burst": 100_000,
                "global_burst": 100_000,
                "wait_seconds": 0,
            },
        },
    )
    env = {"PARITY_WEBFORM_SECRET": SECRET}
    log = tmp_path / "parity.log"
    total = 120
    first = ParityProcess.run(settings, "--only", "webform", "web", log_path=log, env=env)
    first.wait_for_port(web_port)
    # Each person opens the form (its token and difficulty), then does the work.
    bodies = []
    for i in range(total):
        status, html = request(web_port, "GET", "/contact")
        assert status == 200, first.log()
        token = re.search(r'name="form_token" id="form_token" value="([^"]+)"', html)
        assert token is not None
        bodies.append(
            multipart(
                {
                    "form_token": token.group(1),
                    "work": stamp(token.group(1), BITS),
                    "name": f"Person {i}",
                    "email": f"person{i}@example.org",
                    "text": f"Post {i}: I lost access to my account.",
                }
            )
        )
    answered: list[int] = []
    resent: Counter[int] = Counter()
    enough = threading.Event()
    lock = threading.Lock()

    def post(i: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, _ = request(web_port, "POST", "/contact", bodies[i])
            except OSError:
                status = 0  # no answer: the browser sends the same post again
            if status == 303:
                with lock:
                    answered.append(i)
                    if len(answered) >= 30:
                        enough.set()
                return
            with lock:
                resent[i] += 1
            time.sleep(0.2)
        raise AssertionError(f"post {i} never answered")

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, i) for i in range(total)]
        assert enough.wait(60), first.log()
        first.kill()  # SIGKILL: no clean-up of any kind
        killed_at = len(answered)
        with running(
            ParityProcess.run(settings, "--only", "webform", "web", log_path=log, env=env)
        ) as second:
            second.wait_for_port(web_port)
            for future in futures:
                future.result(timeout=180)
            engine = make_engine(db_url)
            try:
                wait_until_normalized(engine)
                with engine.connect() as conn:
                    intake = conn.execute(select(func.count()).select_from(Intake)).scalar_one()
                    messages = conn.execute(select(func.count()).select_from(Message)).scalar()
                    per_submission = Counter(
                        conn.execute(
                            select(Identity.handle)
                            .join(Message, Message.identity_id == Identity.id)
                            .join(Case, Case.id == Message.case_id)
                            .where(Identity.kind == "web")
                        ).scalars()
                    )
            finally:
                engine.dispose()
    # The kill really happened mid-run, and some posts had to be sent again.
    assert 30 <= killed_at < total, killed_at
    assert sum(resent.values()) > 0
    assert sorted(answered) == list(range(total))
    # Every answered post stored, none twice.
    assert intake == messages == total
    assert len(per_submission) == total and set(per_submission.values()) == {1}
