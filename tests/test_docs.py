"""The documentation: generated pages current and complete, commands shown that work, a site
whose build fails on a broken link or a page left out of the navigation, a short README.

Coverage is computed here from the code by other routes than the generator takes: settings
from the models' JSON schema, commands by walking the parser, routes from the app's router,
metrics from a scrape of the exposition text.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inbox import migrate
from inbox.db import make_engine
from inbox.models import Base
from parity import docsgen
from parity.cli import build_parser
from parity.settings import Settings
from tests.support.smtp_support import REPO

DOCS = REPO / "docs"
REFERENCE = DOCS / "reference"
MKDOCS = REPO / ".venv" / "bin" / "mkdocs"
MARKER = re.compile(r"^<!-- runnable(?:: (parse))? -->$")


# --- the generated reference -------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return docsgen.render()


def test_every_generated_page_is_current(generated):
    stale = [
        name
        for name, text in generated.items()
        if (REFERENCE / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale: {stale}; run `python -m parity.docsgen` and commit the pages"


def test_the_check_mode_names_a_stale_page(tmp_path, generated):
    for name, text in generated.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert docsgen.stale(generated, tmp_path) == []
    (tmp_path / "cli.md").write_text(generated["cli.md"] + "\nedited by hand\n", encoding="utf-8")
    (tmp_path / "metrics.md").unlink()
    assert docsgen.stale(generated, tmp_path) == ["cli.md", "metrics.md"]


def _schema_keys(schema: dict[str, Any], node: dict[str, Any], prefix: str) -> Iterator[str]:
    """Dotted keys of every leaf setting, following $refs; a list of models adds `[]`."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if node.get("type") == "object" and "properties" in node:
        for name, child in node["properties"].items():
            yield from _schema_keys(schema, child, f"{prefix}.{name}" if prefix else name)
        return
    items = node.get("items", {})
    if node.get("type") == "array" and "$ref" in items:
        yield from _schema_keys(schema, items, prefix + "[]")
        return
    yield prefix


def test_the_settings_reference_names_every_setting(generated):
    schema = Settings.model_json_schema()
    keys = sorted(set(_schema_keys(schema, schema, "")))
    rows = set(re.findall(r"^\| `([^`]+)` \|", generated["settings.md"], re.M))
    missing = [key for key in keys if key not in rows]
    assert not missing, missing
    assert len(keys) >= 150  # the walk found the settings, not an empty schema
    # Every row has a type and a default (or says it is required).
    for line in generated["settings.md"].splitlines():
        if line.startswith("| `") and "." in line.split("`")[1]:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            assert cells[1] and cells[2], line


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    own: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            own += action.option_strings or [str(action.metavar or action.dest)]
    yield path, own


def _sections(page: str) -> dict[str, str]:
    parts = re.split(r"^## `([^`]+)`$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_command_reference_names_every_command_and_flag(generated):
    sections = _sections(generated["cli.md"])
    found = list(_commands(build_parser(), ("parity",)))
    assert len(found) >= 40
    for path, arguments in found:
        title = " ".join(path)
        assert title in sections, f"no section for {title}"
        for argument in arguments:
            assert f"`{argument}`" in sections[title], (title, argument)


def test_the_http_reference_names_every_route_the_app_serves(generated, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/app.db")
    try:
        app = docsgen.web_app(engine)
        served = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
    finally:
        engine.dispose()
    listed = set(re.findall(r"^\| `([A-Z]+) (/[^`]*)` \|", generated["http.md"], re.M))
    assert served - listed == set()
    assert listed - served == set()  # nothing documented that is not served
    assert {("POST", "/twilio/sms"), ("GET", "/api/queue"), ("GET", "/manager/audit")} <= served


def test_the_metrics_reference_names_every_metric(generated, tmp_path):
    from inbox.web.api import _exposition

    engine = make_engine(f"sqlite:///{tmp_path}/metrics.db")
    try:
        docsgen._seed(engine)
        text = _exposition(engine)  # what GET /metrics answers
    finally:
        engine.dispose()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "parity_ratio" in names and len(names) >= 12
    page = generated["metrics.md"]
    for name in names:
        assert re.search(rf"^\| `{name}(_total)?`", page, re.M), name


def test_the_data_model_page_names_every_table():
    page = (DOCS / "architecture" / "data-model.md").read_text(encoding="utf-8")
    missing = [t for t in Base.metadata.tables if f"`{t}`" not in page]
    assert not missing, missing


# --- the site builds, and its build fails where it should --------------------------------------


def _site_copy(tmp_path: Path) -> Path:
    root = tmp_path / "site-src"
    shutil.copytree(DOCS, root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copy(REPO / "CHANGELOG.md", root / "CHANGELOG.md")
    return root


def _build(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(root / "out")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_and_fails_on_an_orphan_page_or_a_broken_link(tmp_path):
    assert MKDOCS.exists(), "mkdocs is part of the test extra: ./scripts/bootstrap --test"
    root = _site_copy(tmp_path)
    clean = _build(root)
    assert clean.returncode == 0, clean.stderr
    assert (root / "out" / "reference" / "settings" / "index.html").exists()

    orphan = root / "docs" / "operations" / "orphan.md"
    orphan.write_text("# A page nobody links\n", encoding="utf-8")
    result = _build(root)
    assert result.returncode != 0
    assert "operations/orphan.md" in result.stderr
    orphan.unlink()

    page = root / "docs" / "getting-started" / "first-mail.md"
    page.write_text(
        page.read_text(encoding="utf-8") + "\nSee [nothing](../no/such/page.md) and "
        "[no anchor](../architecture/promises.md#99-no-such-promise).\n",
        encoding="utf-8",
    )
    result = _build(root)
    assert result.returncode != 0
    assert "no/such/page.md" in result.stderr and "99-no-such-promise" in result.stderr


def test_the_site_asks_nothing_of_the_network():
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    # Material's social cards and privacy plugin download at build time; fonts from Google.
    assert "font: false" in config
    assert not re.search(r"^\s*-\s*(social|privacy|optimize)\b", config, re.M)


# --- commands shown in the docs ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    parse_only: bool
    text: str


def blocks(path: Path) -> list[Block]:
    """The shell blocks marked runnable in one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    for i, line in enumerate(lines):
        marker = MARKER.match(line.strip())
        if not marker:
            continue
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        assert re.fullmatch(r"```(sh|bash|console)?", fence), f"{path}:{i + 1}: no block after"
        end = lines.index("```", i + 2)
        found.append(Block(path, i + 2, marker.group(1) == "parse", "\n".join(lines[i + 2 : end])))
    return found


MARKDOWN = sorted([REPO / "README.md", *DOCS.rglob("*.md")])
RUN_PAGES = [p for p in MARKDOWN if any(not b.parse_only for b in blocks(p))]
PARSE_BLOCKS = [b for p in MARKDOWN for b in blocks(p) if b.parse_only]


def test_the_docs_mark_commands_to_check():
    # The extraction must find the marked blocks: a changed marker would silently check none.
    assert len(RUN_PAGES) >= 8
    assert len(PARSE_BLOCKS) >= 10
    assert any(b.path.name == "README.md" for b in PARSE_BLOCKS)


def parity_calls(script: str) -> list[list[str]]:
    """The arguments of every `parity` command in a shell script."""
    calls = []
    joined = re.sub(r"\\\n", " ", script)
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)  # a comment
        for match in re.finditer(r"(?:^|[\s;&|(])(?:\S*/)?parity\s+([^;&|)<>\n]*)", line):
            calls.append(shlex.split(match.group(1)))
    return calls


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("parity cases list --json", [["cases", "list", "--json"]]),
        (
            ".venv/bin/parity db upgrade && parity db current",
            [["db", "upgrade"], ["db", "current"]],
        ),
        ("TOKEN=$(.venv/bin/parity users token ann)", [["users", "token", "ann"]]),
        (
            "PARITY_PASSWORD='x y' parity users add ann --role admin   # a comment",
            [["users", "add", "ann", "--role", "admin"]],
        ),
        ("docker compose exec smtp parity connectors status", [["connectors", "status"]]),
        ("parity outbox list \\\n  --json > out.json", [["outbox", "list", "--json"]]),
        ("python -m parity.docsgen --check", []),
        ("curl -H 'Cookie: parity_session=x' http://127.0.0.1:8080/", []),
    ],
)
def test_parity_calls_are_found_in_shell_text(script, expected):
    assert parity_calls(script) == expected


@pytest.mark.parametrize(
    "block", PARSE_BLOCKS, ids=[f"{b.path.relative_to(REPO)}:{b.line}" for b in PARSE_BLOCKS]
)
def test_a_command_that_needs_a_provider_parses(block):
    syntax = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    for argv in parity_calls(block.text):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{block.path}:{block.line}: `parity {shlex.join(argv)}` ({exc})")
    for script in re.findall(r"(?:^|\s)(\./scripts/\w+|bench/\w+\.py)", block.text):
        assert (REPO / script).exists(), script
    for module in re.findall(r"-m (bench\.\w+)", block.text):
        assert (REPO / (module.replace(".", "/") + ".py")).exists(), module


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(REPO)) for p in RUN_PAGES])
def test_the_runnable_commands_of_a_page_run_against_a_fresh_store(page, tmp_path):
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    settings = tmp_path / "settings.toml"
    settings.write_text(
        '[database]\nurl = "sqlite:///var/parity.db"\n\n[logging]\nlevel = "WARNING"\n'
    )
    (tmp_path / "var").mkdir()
    engine = make_engine(f"sqlite:///{tmp_path}/var/parity.db")
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARITY_")}
    env.update(
        PARITY_SETTINGS=str(settings),
        # As an operator would have it; the audit chain is keyed.
        PARITY_AUDIT_KEY=secrets.token_urlsafe(32),
        PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        COLUMNS="100",
    )
    # The page's blocks in order, in one shell, as a reader would type them one after another.
    script = "\n".join(
        f"echo '>>> {page.name} line {b.line}' >&2\n{b.text}"
        for b in blocks(page)
        if not b.parse_only
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


# --- the README ---------------------------------------------------------------------------


def test_the_readme_is_short_and_its_links_lead_somewhere():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (REPO / link).exists(), link
    for command in ("./scripts/run", "./scripts/test"):
        assert command in text
