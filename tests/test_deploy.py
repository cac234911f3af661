"""docker-compose.yml and the Dockerfile, checked offline (there is no Docker engine here).

The compose file is validated against the compose-spec schema that check-jsonschema ships;
then what the schema cannot know: every depends_on names a service, every command the file
runs is a command our CLI accepts, secrets only come from the environment, and the settings
file baked into the image loads; the .env example names every variable; Caddy itself
validates the Caddyfile and its routes reach the services that serve them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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
ENV_EXAMPLE = REPO / ".env.example"
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"
CONTAINER_SETTINGS = REPO / "config" / "settings.toml"
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
    # Without a profile: the database, the migration, SMTP, the web inbox and its TLS proxy.
    default = {n for n, s in known.items() if not s.get("profiles")}
    assert default == {"db", "migrate", "smtp", "web", "caddy"}


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
    settings = load(CONTAINER_SETTINGS)
    everywhere = "0.0.0.0"  # noqa: S104 - inside a container, published by compose
    assert settings.connectors.smtp.host == everywhere
    assert settings.connectors.web.host == everywhere
    assert settings.database.url_env == "PARITY_DATABASE_URL"
    compose_text = COMPOSE.read_text(encoding="utf-8")
    assert f'"2525:{settings.connectors.smtp.port}"' in compose_text
    # The inbox reaches the world through caddy only; the host's loopback is for the operator.
    assert f'"127.0.0.1:8080:{settings.connectors.web.port}"' in compose_text
    # Behind the TLS proxy: secure cookies, the proxy's client address, public https URLs.
    assert settings.inbox.cookie_secure and settings.inbox.trust_forwarded_for
    assert settings.connectors.web.public_url.startswith("https://")
    assert settings.connectors.webform.public_url.startswith("https://")


def test_every_parity_service_reads_the_mounted_settings_and_a_required_audit_key(compose):
    parity_services = [
        (name, service)
        for name, service in services(compose).items()
        if service.get("image") == "parity:latest"
    ]
    assert len(parity_services) >= 10
    for name, service in parity_services:
        environment = service["environment"]
        settings_file = Path(environment["PARITY_SETTINGS"])
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts.get(str(settings_file.parent)) == "./config", name
        assert (REPO / "config" / settings_file.name).exists()
        assert str(service["volumes"][0]).endswith(":ro"), name
        # No default: a container never writes an unkeyed audit chain.
        assert environment["PARITY_AUDIT_KEY"].startswith("${PARITY_AUDIT_KEY:?"), name


def test_only_mail_and_the_tls_proxy_are_published_to_the_world(compose):
    public: dict[str, list[str]] = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                public.setdefault(name, []).append(str(port))
    assert public == {"smtp": ["2525:2525"], "caddy": ["80:80", "443:443", "443:443/udp"]}


def test_the_env_example_names_every_variable_compose_reads():
    used = set(re.findall(r"\$\{([A-Z_0-9]+)", COMPOSE.read_text(encoding="utf-8")))
    required = set(re.findall(r"\$\{([A-Z_0-9]+):\?", COMPOSE.read_text(encoding="utf-8")))
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    given = {line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z_0-9]+=", line)}
    assert used == given, (used - given, given - used)
    assert {"POSTGRES_PASSWORD", "PARITY_AUDIT_KEY", "PARITY_DOMAIN", "ACME_EMAIL"} <= required
    # The example holds no secret value: every line is VAR= with nothing after it.
    assert all(line.endswith("=") for line in lines if re.match(r"^[A-Z_0-9]+=", line))
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and ".env" in (REPO / ".dockerignore").read_text().splitlines()


def _caddy(*args: str, config: Path = CADDYFILE) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(config.parent),
        "XDG_DATA_HOME": "/nonexistent",
        "PARITY_DOMAIN": "support.example.com",
        "ACME_EMAIL": "ops@example.com",
    }
    return subprocess.run(
        ["caddy", *args, "--config", str(config), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=config.parent,
    )


def test_caddy_accepts_the_caddyfile_and_refuses_a_broken_one(tmp_path):
    result = _caddy("validate")
    assert result.returncode == 0 and "Valid configuration" in result.stdout + result.stderr
    broken = tmp_path / "Caddyfile"
    broken.write_text(CADDYFILE.read_text().replace("reverse_proxy web:8080", "reverse_prox web"))
    assert _caddy("validate", config=broken).returncode != 0


def _upstreams(route: dict[str, Any]) -> list[str]:
    found = []
    for handle in route.get("handle", []):
        found += [u["dial"] for u in handle.get("upstreams", [])]
        for sub in handle.get("routes", []):
            found += _upstreams(sub)
    return found


def _answers(route: dict[str, Any]) -> bool:
    """Whether a route ends the request (a proxy or a fixed answer), unlike the header and
    compression handlers that every request passes through."""
    text = json.dumps(route)
    return '"reverse_proxy"' in text or '"static_response"' in text


def _route_for(routes: list[dict[str, Any]], path: str) -> list[str]:
    """The upstreams of the first answering subroute whose path matcher takes `path`, in
    Caddy's order; [] when that route answers by itself."""
    for route in routes:
        paths = [p for m in route.get("match", []) for p in m.get("path", [])]
        matched = not paths or any(
            p == path or (p.endswith("*") and path.startswith(p[:-1])) for p in paths
        )
        if matched and _answers(route):
            return _upstreams(route)
    raise AssertionError(f"no route answers {path}")


def test_caddy_routes_each_path_to_the_service_that_serves_it(compose):
    adapted = _caddy("adapt")
    assert adapted.returncode == 0, adapted.stderr
    config = json.loads(adapted.stdout)
    (server,) = config["apps"]["http"]["servers"].values()
    (site,) = server["routes"]
    assert site["match"] == [{"host": ["support.example.com"]}]
    inner = [r for h in site["handle"] for r in h.get("routes", [])]
    port = load(CONTAINER_SETTINGS).connectors.web.port
    expected = {
        "/": "web",
        "/api/cases": "web",
        "/healthz": "web",
        "/contact": "webform",
        "/status/C-000001": "webform",
        "/twilio/sms": "twilio",
        "/meta/webhook": "meta",
        "/telegram/webhook": "telegram",
    }
    for path, service in expected.items():
        assert _route_for(inner, path) == [f"{service}:{port}"], path
        assert service in services(compose)
    assert _route_for(inner, "/metrics") == []  # answered 404 by caddy itself


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
