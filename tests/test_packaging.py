"""Install and first run: the package metadata builds without deprecation warnings, and ``make run``
installs only what running needs (the test tools come with ``make test``)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.unit
def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    # the TOML-table form (`license = { text = ... }`) is deprecated since setuptools 77
    data = _pyproject()
    assert isinstance(data["project"]["license"], str)
    requires = data["build-system"]["requires"]
    bound = [r for r in requires if r.replace(" ", "").startswith("setuptools>=")]
    assert bound, requires
    major = int(bound[0].split(">=")[1].split(".")[0].split(",")[0])
    assert major >= 77


def _dry_run(target: str, tmp_path: Path) -> str:
    venv = tmp_path / "venv"  # does not exist: make prints every step it would take
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", target],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_installs_only_the_runtime(tmp_path):
    steps = _dry_run("run", tmp_path)
    assert "pip install --quiet -e ." in steps
    assert "[test]" not in steps


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["test", "lint", "bench"])
def test_test_tools_come_with_test_lint_and_bench(target, tmp_path):
    assert '-e ".[test]"' in _dry_run(target, tmp_path)


def test_bench_baseline_app_starts_without_library_warnings(caplog, fake_slack):
    # "As you gave client as well, token will be unused." was printed in every `make bench`
    import logging

    from bench.minimal import MinimalApp

    with caplog.at_level(logging.WARNING):
        app = MinimalApp(fake_slack.api_url)
    app.server.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
