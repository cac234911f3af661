"""`parity run` sends acknowledgements itself, and the settings that drive it are checked.

End to end: a real SMTP client sends a mail to Parity's SMTP server in a `parity run`
process; the normalizer opens a case and queues the acknowledgement; the email outbox in the
same process delivers it to a relay (aiosmtpd) the test runs.
"""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time
import tomllib
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.config import EmailRelaySettings, OutboxSettings
from normalizer.acks import AckSettings
from parity.settings import SettingsError, load, parse
from tests.support.dns_server import shared_dns
from tests.support.helpers import child_env
from tests.support.sink import Sink

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_parity_run_acknowledges_a_new_case(db_url: str, sink: Sink, tmp_path: Path):
    smtp_port = _free_port()
    settings = tmp_path / "settings.toml"
    settings.write_text(
        f"""
[database]
url = "{db_url}"
url_env = "PARITY_TEST_UNSET_URL"

[connectors.smtp]
port = {smtp_port}
support_domains = ["support.example.com"]

# The fixture DNS (tests/fixtures/dns): 127.0.0.1 may send for the sender's domain, so the
# sender is authenticated and acknowledged.
[mail_auth]
nameservers = ["127.0.0.1:{shared_dns().port}"]
timeout_seconds = 1.0

[outbox]
poll_seconds = 30.0

[outbox.email]
host = "{sink.host}"
port = {sink.port}
security = "none"
from_address = "Support <help@support.example.com>"
"""
    )
    env = child_env()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "parity", "--settings", str(settings), "run", "--only", "smtp"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", smtp_port, timeout=10)
                break
            except OSError:
                assert daemon.poll() is None, "parity run exited"
                assert time.monotonic() < deadline, "Parity's SMTP server did not start"
                time.sleep(0.2)
        mail = EmailMessage()
        mail["From"] = "Ann Example <ann@example.org>"
        mail["To"] = "help@support.example.com"
        mail["Subject"] = "Locked out"
        mail["Message-ID"] = "<daemon-1@example.org>"
        mail.set_content("I cannot log in.")
        with client:
            client.send_message(mail)
        # Far sooner than the 30 s poll: the new case wakes the outbox.
        deadline = time.monotonic() + 20
        while not sink.delivered:
            assert time.monotonic() < deadline, "no acknowledgement reached the relay"
            time.sleep(0.1)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise
    (delivery,) = sink.delivered
    ack = delivery.parsed()
    assert delivery.rcpt_tos == ["ann@example.org"]
    assert ack["In-Reply-To"] == "<daemon-1@example.org>"
    assert ack["Subject"].startswith("[C-000001 #")
    assert daemon.returncode == 0


def test_settings_toml_shows_every_default():
    data = tomllib.loads((ROOT / "settings.toml").read_text())
    settings = parse(data)
    assert settings.acknowledgements == AckSettings()
    assert settings.outbox == OutboxSettings()
    # The shared keys, then one table per channel acknowledged from [acknowledgements]: the
    # channels are the registry's (each with a default), and settings.toml shows every one.
    templates = AckSettings().templates
    assert set(data["acknowledgements"]) == set(AckSettings.model_fields) | set(templates)
    for channel, template in templates.items():
        assert set(data["acknowledgements"][channel]) <= set(type(template).model_fields)
    assert set(data["outbox"]) == set(OutboxSettings.model_fields)
    assert set(data["outbox"]["email"]) == set(EmailRelaySettings.model_fields)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[acknowledgements.email]\nsubject = "Re: {subject}"\n', "must contain {tag}"),
        ('[acknowledgements.sms]\nbody = "Thanks {nmae}"\n', "unknown placeholder {nmae}"),
        ("[outbox]\nmax_atempts = 3\n", "unknown key 'outbox.max_atempts'"),
        (
            '[outbox.email]\nhost = "relay.example.net"\nsecurity = "none"\nusername = "u"\n',
            "AUTH without TLS",
        ),
        ('[outbox.email]\nsecurity = "ssl"\n', "security is"),
    ],
)
def test_bad_settings_stop_start_up_with_their_name(tmp_path: Path, toml: str, message: str):
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    with pytest.raises(SettingsError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load(path)
