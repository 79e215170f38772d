"""The code's own rules, checked rather than hoped for (docs/architecture.md): dependencies point
one way and no package's modules import each other in a circle (import-linter's contracts in
pyproject.toml), ruff finds nothing, no module grows past what one person reads at a sitting,
and every module imports — a name moved without its importers fails here, not in the field."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("firmware", "domain", "webui", "hub", "kiroku")
MAX_LINES = 500
DATA_TABLES = {"webui/i18n.py"}  # the UI's words in two languages: a table, not logic


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is in pyproject.toml's test extra (make setup-test)")
    return found


def test_the_layers_hold_and_no_package_imports_in_a_circle():
    out = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "broken" not in out.stdout.lower().replace("0 broken", "")


def test_ruff_finds_nothing():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_no_module_is_longer_than_a_sitting():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(ROOT)) not in DATA_TABLES}
    assert long == {}, f"split these by what changes together: {long}"


def test_every_module_imports():
    failed = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name.endswith(".__main__"):
                continue
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # every failure is reported, not the first
                failed[info.name] = f"{type(exc).__name__}: {exc}"
    assert failed == {}, failed
