"""docker-compose.yml and the Dockerfile, checked offline (there is no Docker engine here).

The compose file is validated against the compose-spec schema that check-jsonschema ships;
then what the schema cannot know: every depends_on names a service, every command the file
runs is a command our CLI accepts, secrets only come from the environment, and the settings
file baked into the image loads.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.config import CONNECTOR_NAMES
from parity.cli import build_parser
from parity.settings import load
from tests.support.smtp_support import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|_KEY|_SID)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def cli_accepts(argv: list[str]) -> str | None:
    """None when `parity` parses argv, else what argparse said."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip() or "rejected"
    return None


def commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Every command line the file runs: service commands and healthcheck tests."""
    found = []
    for name, service in services(compose).items():
        if "command" in service:
            command = service["command"]
            found.append((name, command if isinstance(command, list) else shlex.split(command)))
        test = service.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shlex.split(test[1])
            found.append((f"{name} healthcheck", argv))
    return found


def test_the_compose_file_is_valid_against_the_compose_spec():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_depends_on_names_a_service_that_can_satisfy_its_condition(compose):
    known = services(compose)
    checked = 0
    for name, service in known.items():
        depends = service.get("depends_on", {})
        entries = {d: {} for d in depends} if isinstance(depends, list) else depends
        for target, rule in entries.items():
            assert target in known, f"{name} depends on unknown service {target}"
            assert target != name
            condition = rule.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in known[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert known[target].get("restart") == "no", f"{target} is not one-shot"
            checked += 1
    assert checked >= 10


def test_every_command_it_runs_exists_in_the_cli(compose):
    runs = commands(compose)
    parity_runs = [(where, argv) for where, argv in runs if argv[0] == "parity"]
    assert len(parity_runs) >= 13  # migrate, six connectors and their healthchecks
    for where, argv in parity_runs:
        assert cli_accepts(argv[1:]) is None, (where, argv, cli_accepts(argv[1:]))
    others = {argv[0] for _, argv in runs if argv[0] != "parity"}
    assert others == {"pg_isready"}  # the PostgreSQL image's own check
    # The checker itself can fail: a command we do not have is refused.
    assert cli_accepts(["run", "--only", "fax"]) is not None
    assert cli_accepts(["connectors", "stats"]) is not None


def test_one_service_per_connector_and_a_one_shot_migration(compose):
    known = services(compose)
    for connector in CONNECTOR_NAMES:
        service = known[connector]
        assert service["command"] == ["parity", "run", "--only", connector]
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"] == ["CMD", "parity", "connectors", "check", connector]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        assert service["stop_signal"] == "SIGTERM"  # `parity run` stops cleanly on it
    assert known["migrate"]["command"] == ["parity", "db", "upgrade"]
    assert known["db"]["image"].startswith("postgres:15")
    # Without a profile: the database, the migration, SMTP and the web inbox.
    default = {n for n, s in known.items() if not s.get("profiles")}
    assert default == {"db", "migrate", "smtp", "web"}


def test_secrets_come_only_from_the_environment(compose):
    seen = 0
    for name, service in services(compose).items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                seen += 1
                assert re.fullmatch(r"\$\{[A-Z_]+(:-|:\?[^}]*)?\}", str(value)), (name, key)
        url = environment.get("PARITY_DATABASE_URL")
        if url is not None:
            assert "${POSTGRES_PASSWORD" in url, name
    assert seen >= 15


def test_the_image_settings_load_and_listen_where_compose_publishes():
    settings = load(REPO / "docker" / "settings.toml")
    everywhere = "0.0.0.0"  # noqa: S104 - inside a container, published by compose
    assert settings.connectors.smtp.host == everywhere
    assert settings.connectors.web.host == everywhere
    assert settings.database.url_env == "PARITY_DATABASE_URL"
    compose_text = COMPOSE.read_text(encoding="utf-8")
    assert f'"2525:{settings.connectors.smtp.port}"' in compose_text
    assert f'"8080:{settings.connectors.web.port}"' in compose_text


def test_the_dockerfile_copies_what_exists_and_runs_parity():
    text = DOCKERFILE.read_text(encoding="utf-8")
    sources = [
        part
        for line in text.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    ]
    assert sources, "no COPY lines"
    for source in sources:
        assert (REPO / source).exists(), source
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    argv = yaml.safe_load(cmd)
    assert argv[0] == "parity" and cli_accepts(argv[1:]) is None
    assert re.search(r"^USER (?!root)\w+", text, flags=re.MULTILINE), "runs as root"
