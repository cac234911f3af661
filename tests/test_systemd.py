"""The systemd unit files under deploy/systemd pass `systemd-analyze verify`, warnings included."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    # Fail, never skip: scripts/bootstrap --test installs systemd.
    assert tool is not None, "systemd-analyze is missing: run scripts/bootstrap --test"
    units = sorted(str(p) for p in directory.glob("*.service"))
    return subprocess.run(
        [tool, "verify", "--man=no", *units],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _instances(tmp_path: Path, edit: str = "", replace: str = "") -> Path:
    """The template as the units systemd would make of it, plus the migration unit."""
    template = (UNITS / "parity@.service").read_text()
    for connector in ("smtp", "web", "imap", "twitter", "reddit", "twilio"):
        (tmp_path / f"parity@{connector}.service").write_text(template.replace(edit, replace))
    shutil.copy(UNITS / "parity-migrate.service", tmp_path)
    return tmp_path


def test_the_units_verify_without_a_warning(tmp_path):
    result = _verify(_instances(tmp_path))
    # systemd-analyze exits 0 on unknown values (it only warns): any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_check_catches_a_broken_unit(tmp_path):
    result = _verify(_instances(tmp_path, "Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier" in result.stderr


def test_each_connector_unit_runs_only_that_connector():
    template = (UNITS / "parity@.service").read_text()
    assert "run --only %i" in template
    assert "Requires=parity-migrate.service" in template
    assert "db upgrade" in (UNITS / "parity-migrate.service").read_text()
