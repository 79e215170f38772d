#!/usr/bin/env python3
"""The test suite on the image's Python stack, without a Pi.

The image runs kiroku on Debian trixie's Python and its apt packages (packages.txt: PyAV,
numpy, cryptography, Flask, argon2-cffi, fpdf2, ...), in the venv install-venv makes; the
developers' venv and the rest of `make test` use PyPI's newest releases, which can differ
by years. Here the test suite runs on the image's versions: a trixie root file system with
the image's packages (less what only Raspberry Pi's archive has, as in the boot test) and
the tools the tests use as a person would (pytest, ffmpeg, age, openssl, poppler), the
firmware put in by the image's own install-firmware exactly as the boot test does, and
pytest started inside it (chroot, in a private mount namespace) on the *installed* kiroku
in /opt/kiroku/venv: the checkout's tests, with the checkout's code kept off the import
path (--import-mode=append, and the working folder holds no code).

Left out: the browser tests (Chromium and Playwright are not in the image), the packaging
test (it builds the wheel from the git checkout; the venv here was made from that wheel),
the call recorder's SIPp tests (SIPp places the calls; the call recorder's own code runs in
test_calls.py) and the update tests, the OS update's and the admin page's included (they
make releases from a git checkout with the release machine's tools; kiroku-update itself is
a shell script; the boot test runs the page's update path on the image), build-image's
test (a release machine's script, on a git checkout), the city hub's tests (the hub runs on a
city server with PostgreSQL, not on the image; the device's side of it, the uplink, is tested
here with the image's Mosquitto) and the code's layout and lint (checked on the checkout).

The suite runs on several workers (Debian's pytest-xdist), as `make test` runs it on the
developers' stack: many tests wait on real time (recording for seconds), so more workers
than cores help; --workers 1, or -n in the pytest arguments, says otherwise.

Making that root file system (mmdebstrap once, then install-firmware every time) takes
minutes of downloads and dpkg; `stack.py --prepare` makes it and stops, so that it can be
done while something else runs (make test does it beside the other stages). The next run
takes it if the checkout has not changed since, and makes it afresh otherwise.

Usage: stack.py [--work DIR] [--workers N] [PYTEST ARGS ...]   (as root; needs mmdebstrap, unshare, git, pip)
       stack.py [--work DIR] --prepare
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import run as boot

# systemd, which every image has (install-firmware makes the users and enables the units with it),
# and what the tests use.
TOOLS = ["systemd", "python3-pytest", "python3-pytest-xdist", "ffmpeg", "age", "openssl", "poppler-utils",
         "mosquitto"]  # the broker the uplink's tests talk to (the device's side of the hub runs on the image)
STACK = ["av", "numpy", "cryptography", "Flask", "Flask-WTF", "argon2-cffi", "fpdf2", "gpiozero", "pytest",
         "pytest-xdist"]
LEFT_OUT = ["tests/test_browser.py", "tests/test_packaging.py", "tests/test_calls_sipp.py", "tests/test_update.py",
            "tests/test_update_web.py", "tests/test_os_update.py", "tests/test_build_image.py",
            "tests/test_boottest_retry.py",  # the boot test's own harness, a CI tool
            # the city hub runs on a city server, not on the image (psycopg, PostgreSQL); the code's
            # layout and lint are checked once, on the checkout
            "tests/test_hub_core.py", "tests/test_hub_web.py", "tests/test_city.py", "tests/test_hub_browser.py",
            "tests/test_bench_hub.py", "tests/test_layout.py", "tests/test_locker.py", "tests/test_s3_engine.py",
            # schemathesis is a test tool from PyPI, not on the image: the API it fuzzes is the
            # same code on both stacks, and test_inputs.py checks its refusals here too
            "tests/test_fuzz_api.py"]
# The official age test vectors, which test_age.py expects beside the checkout.
TESTKIT = boot.REPO.parent / "shared" / "testkit" / "age"

# In a mount namespace of its own, so nothing stays mounted if the run is killed: the
# kernel's views the tests need (processes, devices, shared memory), then the chroot.
ENTER = """set -eu
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
exec chroot "$root" "$@"
"""


def log(message: str) -> None:
    print(f"stacktest: {message}", flush=True)


def checkout_fingerprint() -> str:
    """What install-firmware put in the root: this checkout's files (as boot.copy_checkout takes them)."""
    files = subprocess.run(["git", "-C", boot.REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    digest = hashlib.sha256(" ".join([*boot.IMAGE_PACKAGES, *TOOLS]).encode())
    for name in sorted(filter(None, files)):
        path = boot.REPO / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def make_root(work: Path, root: Path) -> None:
    """The image's packages and the tests' tools (cached), with the firmware installed by install-firmware."""
    base = boot.rootfs(work, [*boot.IMAGE_PACKAGES, *TOOLS])
    if root.exists():
        shutil.rmtree(root)
    boot.run("cp", "-a", base, root)
    boot.install_firmware(root)
    if TESTKIT.is_dir():
        shutil.copytree(TESTKIT, root / "opt/kiroku/shared/testkit/age")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=boot.IMAGE_BUILD / "build" / "boottest")
    parser.add_argument("--prepare", action="store_true", help="only make the root file system, for a later run")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("KIROKU_TEST_WORKERS") or
                                                             max(2, os.cpu_count() or 1)))
    args, pytest_args = parser.parse_known_args()
    if args.workers > 1 and not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in pytest_args):
        pytest_args = ["-n", str(args.workers), "--dist", "loadgroup", *pytest_args]
    if os.geteuid() != 0:
        print("stacktest: run as root (mmdebstrap, chroot)", file=sys.stderr)
        return 2
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # chroot
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    root = work / "stack-root"
    prepared = work / "stack-root.prepared"  # the checkout's fingerprint, when --prepare made it
    fingerprint = checkout_fingerprint()
    if prepared.exists() and prepared.read_text() == fingerprint and root.is_dir():
        log("the root file system --prepare made is taken (the checkout has not changed since)")
    else:
        make_root(work, root)
    prepared.unlink(missing_ok=True)  # a run leaves the root changed: the next one makes it afresh
    if args.prepare:
        prepared.write_text(fingerprint)
        log(f"the root file system is prepared in {time.monotonic() - started:.0f} s")
        return 0
    versions = subprocess.run(
        ["chroot", root, "/opt/kiroku/venv/bin/python", "-c",
         "import sys; from importlib.metadata import version; print('Python', sys.version.split()[0], "
         f"*(f'{{name}} {{version(name)}}' for name in {STACK!r}), sep=', ')"],
        check=True, capture_output=True, text=True).stdout.strip()
    log(f"the image's stack: {versions}")
    log(f"the root file system is ready after {time.monotonic() - started:.0f} s; pytest starts")

    src = "/opt/kiroku/src"
    pytest = ["/opt/kiroku/venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider", "-c", f"{src}/pyproject.toml",
              f"--rootdir={src}", "--import-mode=append",
              *(f"--ignore={src}/{name}" for name in LEFT_OUT), *pytest_args, f"{src}/tests"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    # The working folder holds no code: `python -m kiroku`, which the tests start, finds the venv's.
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "enter", root,
                             "sh", "-c", 'cd /tmp && exec "$@"', "pytest", *pytest], env=env)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        log(f"FAILED on the image's stack (pytest exit {result.returncode}) after {elapsed:.0f} s")
        return 1
    shutil.rmtree(root)
    log(f"all passed on the image's stack in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
