"""kiroku as the image installs it: a wheel, not the editable checkout the other tests use.

An editable install finds every file in the checkout, so a migration or template left out of
the package data passes every other test and fails only on the appliance (install-venv builds
a wheel). The full-boot test (image-build) catches that too, but only as root, in minutes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("firmware", "webui", "kiroku", "hub", "domain")


def _tracked() -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    return [name for name in out.split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the checkout (the build leaves build/ and *.egg-info behind)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for name in _tracked():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    str(src), "-w", str(work / "dist")], check=True)
    (built,) = (work / "dist").glob("kiroku-*.whl")
    return built


def test_the_wheel_carries_every_file_the_packages_read(wheel):
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    data = [name for name in _tracked() if name.split("/")[0] in PACKAGES and not name.endswith(".py")]
    assert any(name.endswith(".sql") for name in data) and any(name.endswith(".html") for name in data)
    missing = [name for name in data if name not in in_wheel]
    assert not missing, f"pyproject.toml's package-data leaves these out of an installed kiroku: {missing}"


def test_an_installed_kiroku_opens_its_databases(wheel, tmp_path):
    """Installed from the wheel (not the checkout), kiroku sets up a device: both databases migrate."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True)
    (tmp_path / "pass").write_text("a long enough passphrase\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run([sys.executable, "-c", "import firmware, webui; print(firmware.__file__, webui.__file__)"],
                           env=env, cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert str(REPO) not in where and str(site) in where, where
    data = tmp_path / "data"
    init = subprocess.run([sys.executable, "-m", "kiroku", "init", "--data", str(data), "--recovery-key-out",
                           str(tmp_path / "recovery.txt"), "--manager", "kanri", "--password-file",
                           str(tmp_path / "pass"), "--work-factor", "1"],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    status = subprocess.run([sys.executable, "-m", "kiroku", "vault", "--data", str(data), "--json", "status"],
                            env=env, cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["classes"]["footage"]["segments"] == 0
