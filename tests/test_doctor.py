"""`parity doctor`: a table of broken settings files, each problem named in the output."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from parity.cli import main
from tests.channels.twitter.fake_x import CREDENTIALS


def _closed_port() -> int:
    """A port nothing listens on: bound for a moment by us, then let go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _db(url: str) -> str:
    return f'[database]\nurl = "{url}"\nurl_env = "PARITY_TEST_UNSET_URL"\n'


IMAP = """
[connectors.imap]
enabled = true
[[connectors.imap.accounts]]
name = "support"
host = "127.0.0.1"
port = {port}
username = "support@example.com"
password_env = "PARITY_TEST_DOCTOR_IMAP_PASSWORD"
"""


def cases(db_url: str, tmp_path: Path) -> list[tuple[str, str, str]]:
    """(name, settings text, what the output must say)."""
    closed = _closed_port()
    (tmp_path / "fresh.db").write_bytes(b"")  # an empty SQLite database: no schema
    return [
        (
            "unknown key",
            _db(db_url) + "[logging]\njson_line = true\n",
            "unknown key 'logging.json_line'",
        ),
        ("not TOML", "[database\nurl = ", "not valid TOML"),
        (
            "database down",
            _db(f"postgresql://postgres@127.0.0.1:{closed}/parity"),
            "[database] cannot connect",
        ),
        (
            "not migrated",
            _db(f"sqlite:///{tmp_path / 'fresh.db'}"),
            "schema at migration none, code expects",
        ),
        (
            "IMAP password unset",
            _db(db_url) + IMAP.format(port=closed),
            "PARITY_TEST_DOCTOR_IMAP_PASSWORD (account support)",
        ),
        (
            "no database file",
            _db(f"sqlite:///{tmp_path / 'missing' / 'parity.db'}"),
            "does not exist",
        ),
        (
            "relay unreachable",
            _db(db_url)
            + f'[outbox.email]\nhost = "127.0.0.1"\nport = {closed}\nsecurity = "none"\n',
            f"SMTP relay 127.0.0.1:{closed} unreachable",
        ),
        (
            "X API unreachable",
            _db(db_url)
            + f'[connectors.twitter]\nenabled = true\napi_base_url = "http://127.0.0.1:{closed}"\n'
            + 'user_id = "1"\n',
            f"[connector twitter] X API: cannot reach 127.0.0.1:{closed}",
        ),
    ]


NAMES = [
    "unknown key",
    "not TOML",
    "database down",
    "not migrated",
    "no database file",
    "IMAP password unset",
    "relay unreachable",
    "X API unreachable",
]


@pytest.mark.parametrize("name", NAMES)
def test_doctor_names_the_problem(name, db_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARITY_AUDIT_KEY", "a-long-random-audit-key-for-tests")
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    [(_, text, expected)] = [c for c in cases(db_url, tmp_path) if c[0] == name]
    path = tmp_path / "settings.toml"
    path.write_text(text)
    assert main(["--settings", str(path), "doctor"]) == 1
    out = capsys.readouterr().out
    assert expected in out, out
    assert "fix:" in out


def test_a_sound_installation_passes_and_an_imap_host_is_reached(
    db_url, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("PARITY_AUDIT_KEY", "a-long-random-audit-key-for-tests")
    monkeypatch.setenv("PARITY_TEST_DOCTOR_IMAP_PASSWORD", "imap-secret-value-99")
    with socket.socket() as listener:  # a host that answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        path = tmp_path / "settings.toml"
        path.write_text(_db(db_url) + IMAP.format(port=listener.getsockname()[1]))
        assert main(["--settings", str(path), "doctor"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "no problems found" in out
    assert "imap-secret-value-99" not in out
