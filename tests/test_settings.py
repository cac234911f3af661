"""Settings: the shipped file loads, mistakes stop start-up by name, secrets never show."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from inbox.config import ContentRule, DatabaseSettings
from inbox.secrets import Secret, from_env
from parity import logs
from parity.settings import Settings, SettingsError, load

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "settings.toml"


def test_the_shipped_settings_file_loads():
    settings = load(SHIPPED)
    raw = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    assert settings.sla.first_response_minutes == raw["sla"]["first_response_minutes"]
    assert settings.threading.reopen_window_days == raw["threading"]["reopen_window_days"]
    assert settings.normalizer.max_mime_depth == raw["normalizer"]["max_mime_depth"]
    assert [r.name for r in settings.sla.rules] == [r["name"] for r in raw["sla"]["rules"]]
    assert settings.connectors.smtp.support_domains == raw["connectors"]["smtp"]["support_domains"]
    # Every connector has its section in the shipped file.
    assert set(raw["connectors"]) == set(type(settings.connectors).model_fields)


def test_the_shipped_file_says_what_the_defaults_are():
    # "Every key is shown with its default": the file and the models must not drift apart,
    # with no exception: an operator's own file is laid over the defaults, so whatever the
    # shipped file sets and the code does not would silently vanish with a file of one's own
    # (the content rule "account takeover" did, until it became a default of the code).
    shipped, defaults = load(SHIPPED).model_dump(), Settings().model_dump()
    assert [r["name"] for r in shipped["sla"]["rules"]] == ["account takeover"]
    assert shipped == defaults


def test_an_operators_short_file_keeps_the_shipped_rules(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text("[connectors.smtp]\nport = 2626\n")
    settings = load(own)
    raw = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    assert settings.connectors.smtp.port == 2626
    shipped = [ContentRule.model_validate(r) for r in raw["sla"]["rules"]]
    assert settings.sla.rules == shipped and shipped
    assert settings.sources() == f"{own}, over the built-in defaults"
    # Turning the shipped rule off is said, not implied by leaving it out.
    own.write_text("[sla]\nrules = []\n")
    assert load(own).sla.rules == []


def test_settings_show_says_which_file_was_read(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text('[logging]\nlevel = "WARNING"\n')
    result = subprocess.run(
        [sys.executable, "-m", "parity", "--settings", str(own), "settings", "show"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["logging"]["level"] == "WARNING"
    assert f"settings read from {own}, over the built-in defaults" in result.stderr


BAD = [
    ("unknown key", "[connectors.smtp]\nprot = 25\n", "connectors.smtp.prot"),
    ("unknown section", "[conectors.smtp]\nport = 25\n", "conectors"),
    ("wrong type", '[sla]\nfirst_response_minutes = "soon"\n', "sla.first_response_minutes"),
    ("wrong type, nested", '[sla.business_hours]\nstart = "9am"\n', "sla.business_hours.start"),
    ("out of range", "[connectors.smtp]\nport = 70000\n", "connectors.smtp.port"),
    (
        "a rule that is no pattern",
        '[[sla.rules]]\nname = "x"\npattern = "("\ndue_within_minutes = 5\n',
        "sla.rules.0.pattern",
    ),
]


@pytest.mark.parametrize(("text", "key"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_setting_is_named(tmp_path, text, key):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        load(path)
    assert key in str(error.value)
    assert str(path) in str(error.value)


def test_not_toml_is_a_settings_error(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[sla\nfirst_response_minutes = 5\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load(path)


def parity(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PARITY_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "parity", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("how", "text", "key"),
    [
        ("--settings", BAD[0][1], BAD[0][2]),  # unknown key
        ("PARITY_SETTINGS", BAD[2][1], BAD[2][2]),  # wrong type
    ],
)
def test_the_command_line_stops_with_ex_config_and_the_name(tmp_path, how, text, key):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    if how == "--settings":
        result = parity("--settings", str(path), "cases", "list", "--json")
    else:
        result = parity("cases", "list", "--json", env={"PARITY_SETTINGS": str(path)})
    assert result.returncode == 78
    assert key in result.stderr
    assert result.stdout == ""


def test_parity_settings_selects_another_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.toml"
    path.write_text("[sla]\nfirst_response_minutes = 17\n[threading]\nreopen_window_days = 3\n")
    monkeypatch.setenv("PARITY_SETTINGS", str(path))
    settings = load()
    assert settings.sla.first_response_minutes == 17
    assert settings.threading.reopen_window_days == 3
    # A missing file that was asked for is an error, not the defaults.
    monkeypatch.setenv("PARITY_SETTINGS", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="not found"):
        load()


def test_parity_settings_through_the_command_line(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text("[sla]\nfirst_response_minutes = 17\n")
    result = parity("settings", "show", env={"PARITY_SETTINGS": str(path)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"first_response_minutes": 17' in result.stdout


# --- secrets --------------------------------------------------------------------------------

VALUE = "correct-horse-battery-staple-42"


def test_a_secret_is_masked_in_repr_str_and_formatting():
    secret = Secret(VALUE, "PARITY_IMAP_PASSWORD")
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>60}",
        "%s" % secret,  # noqa: UP031 - the old formatting must mask too
        "{}".format(secret),  # noqa: UP032
        repr({"password": secret}),
        repr([secret]),
    ]
    for text in shown:
        assert VALUE not in text
        assert "PARITY_IMAP_PASSWORD" in text
    assert secret.reveal() == VALUE


def test_secrets_come_from_the_environment_the_file_names(monkeypatch):
    monkeypatch.setenv(
        "PARITY_TEST_DB_URL", f"postgresql+psycopg://parity:{VALUE}@db.example.com/parity"
    )
    db = DatabaseSettings(url="sqlite:///var/parity.db", url_env="PARITY_TEST_DB_URL")
    resolved = db.resolved_url()
    assert isinstance(resolved, Secret)
    assert VALUE in resolved.reveal()
    assert VALUE not in repr(db) and VALUE not in repr(resolved)
    monkeypatch.delenv("PARITY_TEST_DB_URL")
    assert db.resolved_url() == "sqlite:///var/parity.db"
    assert from_env("PARITY_TEST_DB_URL") is None


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_secret_is_masked_in_log_lines(monkeypatch, capsys, restore_logging, json_lines):
    monkeypatch.setenv("PARITY_TEST_IMAP_PASSWORD", VALUE)
    secret = from_env("PARITY_TEST_IMAP_PASSWORD")
    assert secret is not None
    logs.configure("INFO", json_lines)
    log = logging.getLogger("connectors.imap.intake")
    log.info("logging in with %s", secret.reveal())
    log.warning("login failed for imaps://support:%s@imap.example.com/", secret.reveal())
    try:
        raise ConnectionError(f"server said: bad password {secret.reveal()}")
    except ConnectionError:
        log.exception("IMAP poll failed")
    log.info("a URL password we never read: postgresql://parity:hunter2hunter2@db/parity")
    err = capsys.readouterr().err
    assert err.count("\n") >= 4
    assert "logging in with" in err and "IMAP poll failed" in err
    assert VALUE not in err
    assert "hunter2hunter2" not in err
    assert "***" in err
