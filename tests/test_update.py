"""Signed firmware updates: image-build/release makes a release, kiroku-update installs it on a device.

The device is a temporary root with the image's layout (/opt/kiroku/venv-VERSION and the
venv symlink, /etc/kiroku/release-key.pub, a data folder). The two things that need a Pi are
replaced through kiroku-update's hooks: systemctl (a fake whose recorder is "active" when the
started venv's kiroku runs) and install-venv (a fake whose pip only fetches the lock's wheels).
The signature checks, the version check, the wheels and the symlink switch are the real scripts
with real openssl and pip. The package index is a folder holding one small wheel.
(The boot test, image-build/boottest/run.py, runs the real install-venv in the image.)
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "image-build" / "release"
UPDATE = REPO / "image-build" / "overlay" / "usr" / "lib" / "kiroku" / "kiroku-update"

# A recorder comes up when the venv it was started from has a kiroku that runs. Its start job
# stays queued (the recorder inactive) for the first $FAKE_PENDING looks at the job list after a
# restart. A broken one is $FAKE_DOWN: "activating" (crash-looping: systemd restarts it, again
# and again) or "inactive" (its ExecCondition failed: systemd skipped it and is done). Started
# from the venv $FAKE_FLAPPING, the web UI is restarted by systemd between any two looks at its
# NRestarts. $FAKE_KILL_AT_RESTART: the restart into that venv kills kiroku-update (a signal).
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$FAKE_STATE/systemctl.log"
case "$1" in
    restart)
        readlink "$KIROKU_ROOT/opt/kiroku/venv" >"$FAKE_STATE/started"
        echo "${FAKE_PENDING:-0}" >"$FAKE_STATE/pending"
        [ "$(cat "$FAKE_STATE/started")" != "${FAKE_KILL_AT_RESTART:-}" ] || kill -TERM "$PPID"
        ;;
    show)
        n=$(cat "$FAKE_STATE/nrestarts" 2>/dev/null || echo 0)
        if [ "$(cat "$FAKE_STATE/started" 2>/dev/null)" = "${FAKE_FLAPPING:-}" ]; then
            n=$((n + 1))
            echo "$n" >"$FAKE_STATE/nrestarts"
        fi
        echo "$n"
        ;;
    list-jobs)
        pending=$(cat "$FAKE_STATE/pending" 2>/dev/null || echo 0)
        if [ "$pending" -gt 0 ]; then
            echo "7 $3 start waiting"
            echo $((pending - 1)) >"$FAKE_STATE/pending"
        fi
        ;;
    is-active)
        case "$2" in  # the restart an OS update arranged (fake systemd-run): there once arranged
            kiroku-os-reboot.*) if [ -e "$FAKE_STATE/os-reboot" ]; then echo active; exit 0; fi
                                echo inactive; exit 3 ;;
        esac
        [ "$2" != kiroku-call-recorder.service ] || { echo inactive; exit 3; }
        [ "$(cat "$FAKE_STATE/pending" 2>/dev/null || echo 0)" -eq 0 ] || { echo inactive; exit 3; }
        venv=$(cat "$FAKE_STATE/started" 2>/dev/null || readlink "$KIROKU_ROOT/opt/kiroku/venv")
        "$KIROKU_ROOT/opt/kiroku/$venv/bin/kiroku" >/dev/null 2>&1 || { echo "${FAKE_DOWN:-activating}"; exit 3; }
        echo active
        ;;
esac
"""

# The running recorder's `kiroku ctl status --json`: recording for the first $FAKE_BUSY looks, in
# mode $FAKE_MODE; with $FAKE_CTL_REFUSES, no answer at all.
FAKE_CTL = """#!/bin/sh
echo "ctl $*" >>"$FAKE_STATE/systemctl.log"
if [ -n "${FAKE_CTL_TAKES:-}" ]; then  # each answer takes that many seconds of the device's clock
    read -r now _ <"$KIROKU_UPTIME"
    echo "$((${now%.*} + FAKE_CTL_TAKES)).00 0.00" >"$KIROKU_UPTIME"
fi
if [ -n "${FAKE_CTL_REFUSES:-}" ]; then
    echo "kiroku ctl: not allowed to use the control socket" >&2
    exit 2
fi
busy=$(cat "$FAKE_STATE/busy" 2>/dev/null || echo "${FAKE_BUSY:-0}")
if [ "$busy" -gt 0 ]; then
    echo $((busy - 1)) >"$FAKE_STATE/busy"
    state=recording
else
    state=idle
fi
printf '{"mode": "%s", "state": "%s", "device": "counter-1"}\\n' "${FAKE_MODE:-on_demand}" "$state"
"""

# Debian's overlayroot-chroot runs the command in the lower layer (here the test's root, whose
# paths kiroku-update already prefixes) and then exits 0 whatever the command returned: its
# EXIT trap's clean-up ends with `exit 0`. $FAKE_CHROOT_MODE: "skip" runs nothing (and still
# exits 0); "cleanup-fails" exits 1 after the command ran (a login mounted under /run meanwhile).
FAKE_OVERLAYROOT_CHROOT = r"""#!/bin/sh
# called as: overlayroot-chroot sh -c SCRIPT STATUS-FILE COMMAND... (kiroku-update's wrapping)
set -e
script=$3 status=$4
shift 4
echo "$*" >>"$FAKE_STATE/chroot.log"
case "${FAKE_CHROOT_MODE:-}" in
    skip) exit 0 ;;
    cleanup-fails) trap 'exit 1' EXIT ;;
    *) trap 'exit 0' EXIT ;;
esac
sh -c "$script" "$status" "$@"
"""

# pip's part: a venv whose kiroku says its version, or fails to start when the release is broken.
# Its pip only fetches the lock's wheels, hash-checked, from where kiroku-update says they are.
FAKE_INSTALL_VENV = """#!/bin/sh
set -eu
src=$1 venv=$2
if [ -n "${FAKE_INSTALL_FAILS:-}" ]; then
    mkdir -p "$venv/bin"
    echo "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device" >&2
    exit 1
fi
lock=$src/image-build/requirements.lock
test -f "$lock"
mkdir -p "$venv/wheels"
if grep -Eq '^[a-z]' "$lock"; then
    "$PYTHON" -m pip download --quiet --no-deps --require-hashes -r "$lock" -d "$venv/wheels"
fi
version=$(sed -n 's/^version = "\\(.*\\)"/\\1/p' "$src/pyproject.toml")
mkdir -p "$venv/bin"
if [ -e "$src/BROKEN" ]; then
    printf '#!/bin/sh\\nexit 1\\n'
else
    printf '#!/bin/sh\\necho kiroku %s\\n' "$version"
fi >"$venv/bin/kiroku"
chmod +x "$venv/bin/kiroku"
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)


def make_key(path: Path) -> tuple[Path, Path]:
    run("openssl", "genpkey", "-algorithm", "ed25519", "-out", path).check_returncode()
    public = path.with_suffix(".pub")
    run("openssl", "pkey", "-in", path, "-pubout", "-out", public).check_returncode()
    return path, public


WHEEL = "tinydep-1.0-py3-none-any.whl"


def make_index(path: Path) -> Path:
    """The package index's stand-in: a folder with one small pure wheel, as PyPI serves them."""
    if (path / WHEEL).exists():
        return path
    path.mkdir(parents=True)
    with zipfile.ZipFile(path / WHEEL, "w") as whl:
        whl.writestr("tinydep/__init__.py", "")
        whl.writestr("tinydep-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n")
        whl.writestr("tinydep-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("tinydep-1.0.dist-info/RECORD", "")
    return path


def make_checkout(path: Path, version: str, broken: bool = False) -> Path:
    """A tiny kiroku checkout, committed, as the release tool expects one; its lock names the index's wheel."""
    (path / "image-build").mkdir(parents=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "kiroku"\nversion = "{version}"\n')
    index = make_index(path.parent / "index")
    sha = hashlib.sha256((index / WHEEL).read_bytes()).hexdigest()
    (path / "image-build" / "requirements.lock").write_text(f"# beyond apt\ntinydep==1.0 --hash=sha256:{sha}\n")
    if broken:
        (path / "BROKEN").write_text("this release's recorder never gets ready\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", f"kiroku {version}"]):
        run("git", "-C", path, *args, env=env).check_returncode()
    return path


def make_release(key: Path, out: Path, checkout: Path) -> subprocess.CompletedProcess:
    """The release tool, its pip fetching from the index folder beside the checkout."""
    env = {**os.environ, "PIP": f"{sys.executable} -m pip", "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(checkout.parent / "index")}
    return run(RELEASE, "--key", key, "--out", out, "--repo", checkout, env=env)


def release(tmp_path: Path, key: Path, version: str, broken: bool = False) -> Path:
    checkout = make_checkout(tmp_path / f"checkout-{version}{'-broken' if broken else ''}", version, broken)
    done = make_release(key, tmp_path / "releases", checkout)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def repack(release_file: Path, out: Path, drop: str = "", change: dict | None = None) -> Path:
    """The release with one member left out or replaced, as someone in between could do."""
    change = change or {}
    with tarfile.open(release_file) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name == drop:
                continue
            data = change.get(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def one_member_tar(name: str) -> bytes:
    """A tar of one member: a file named ``name`` (a path, say), or a link when it starts with "link"."""
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as t:
        info = tarfile.TarInfo(name)
        if name.startswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)
        else:
            info.size = 4
            t.addfile(info, io.BytesIO(b"data"))
    return packed.getvalue()


def resigned(release_file: Path, key: Path, tmp_path: Path, member: str, data: bytes) -> Path:
    """The release with ``member`` (wheels.tar, debs.tar) replaced by ``data``, its manifest's
    SHA-256 for it and the signature made to match: what whoever holds the key could make."""
    with tarfile.open(release_file) as t:
        manifest = t.extractfile("manifest").read().decode()
    field = member.replace(".tar", "-sha256")
    manifest = re.sub(rf"^{field} .*$", f"{field} {hashlib.sha256(data).hexdigest()}", manifest, flags=re.M)
    (tmp_path / "manifest").write_text(manifest)
    run("openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", tmp_path / "manifest",
        "-out", tmp_path / "manifest.sig").check_returncode()
    return repack(release_file, tmp_path / "resigned.tar", change={
        "manifest": manifest.encode(), member: data, "manifest.sig": (tmp_path / "manifest.sig").read_bytes()})


class Device:
    """A root file system laid out like the image's, at kiroku 0.1.0, with fakes for systemd and pip."""

    def __init__(self, root: Path, public_key: Path, fakes: Path):
        self.root, self.fakes = root, fakes
        self.opt = root / "opt" / "kiroku"
        (root / "etc" / "kiroku").mkdir(parents=True)
        (root / "etc" / "kiroku" / "release-key.pub").write_bytes(public_key.read_bytes())
        self.data = root / "var" / "lib" / "kiroku" / "kiroku.db"
        self.data.parent.mkdir(parents=True)
        self.data.write_bytes(b"the recordings' index")
        fakes.mkdir()
        for name, text in (("systemctl", FAKE_SYSTEMCTL), ("install-venv", FAKE_INSTALL_VENV), ("ctl", FAKE_CTL),
                           ("overlayroot-chroot", FAKE_OVERLAYROOT_CHROOT)):
            (fakes / name).write_text(text)
            (fakes / name).chmod(0o755)
        # The image's venv, as rpi-image-gen/layer/kiroku.yaml makes it.
        src = make_checkout(fakes / "image-src", "0.1.0")
        env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(fakes / "index")}
        run(fakes / "install-venv", src, self.opt / "venv-0.1.0", env=env).check_returncode()
        (self.opt / "venv-0.1.0" / "kiroku-release").write_text("kiroku-release 1\nversion 0.1.0\ncommit 0\n")
        (self.opt / "venv").symlink_to("venv-0.1.0")

    def env(self, timeout: int = 5, pending: int = 0, down: str = "activating", busy: int = 0,
            mode: str = "on_demand", idle_timeout: int = 600, flapping: str = "", kill_at: str = "",
            ctl_refuses: bool = False, overlayroot: bool = False, install_fails: bool = False,
            idle_poll: int = 1, ctl_takes: int = 0) -> dict:
        """kiroku-update's environment on this device (its hooks, the fakes' settings). With
        ``ctl_takes``, the device's clock is a file that each look at the recorder moves on."""
        if ctl_takes:
            (self.fakes / "uptime").write_text("1000.00 0.00\n")
        # No index for pip here: what it installs must come with the release.
        return {**os.environ, "KIROKU_ROOT": str(self.root), "FAKE_STATE": str(self.fakes), "PYTHON": sys.executable,
                "FAKE_PENDING": str(pending), "FAKE_DOWN": down, "FAKE_BUSY": str(busy), "FAKE_MODE": mode,
                "FAKE_FLAPPING": flapping, "FAKE_KILL_AT_RESTART": kill_at,
                "FAKE_CTL_REFUSES": "yes" if ctl_refuses else "",
                "KIROKU_CTL": str(self.fakes / "ctl"), "KIROKU_IDLE_TIMEOUT": str(idle_timeout),
                "KIROKU_IDLE_POLL": str(idle_poll),
                **({"FAKE_CTL_TAKES": str(ctl_takes), "KIROKU_UPTIME": str(self.fakes / "uptime")} if ctl_takes else {}),
                "PIP_INDEX_URL": "http://127.0.0.1:9/nothing-here/",
                "KIROKU_SYSTEMCTL": str(self.fakes / "systemctl"),
                "KIROKU_INSTALL_VENV": str(self.fakes / "install-venv"),
                "KIROKU_READY_TIMEOUT": str(timeout), "KIROKU_SETTLE": "0",
                "FAKE_INSTALL_FAILS": "yes" if install_fails else "",
                # under overlayroot: the lower layer is the test's root, overlayroot-chroot a fake
                **({"KIROKU_LOWER": str(self.root), "KIROKU_OVERLAYROOT_CHROOT": str(self.fakes / "overlayroot-chroot")}
                   if overlayroot else {})}

    def update(self, release_file: Path, *flags: str, **settings) -> subprocess.CompletedProcess:
        return run(UPDATE, *flags, release_file, env=self.env(**settings))

    @property
    def running(self) -> str:
        """What the device's services run: the venv symlink's target."""
        return os.readlink(self.opt / "venv")

    def kiroku(self) -> str:
        return run(self.opt / "venv" / "bin" / "kiroku").stdout.strip()

    @property
    def restarts(self) -> int:
        log = self.fakes / "systemctl.log"
        return sum(line.startswith("restart ") for line in log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def key(tmp_path) -> Path:
    return make_key(tmp_path / "release.pem")[0]


@pytest.fixture
def device(tmp_path, key) -> Device:
    return Device(tmp_path / "root", key.with_suffix(".pub"), tmp_path / "fakes")


def assert_untouched(device: Device) -> None:
    assert device.running == "venv-0.1.0"
    assert device.kiroku() == "kiroku 0.1.0"
    assert not (device.opt / "venv-0.2.0").exists()
    assert device.restarts == 0
    assert device.data.read_bytes() == b"the recordings' index"


def test_a_signed_release_is_installed_beside_the_old_one_and_switched_to(tmp_path, key, device):
    release_file = release(tmp_path, key, "0.2.0")

    # The recorder's start waits in systemd's queue for a while: not yet up is not down.
    done = device.update(release_file, pending=3)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.2.0"
    assert device.kiroku() == "kiroku 0.2.0"
    assert device.restarts == 1
    # The previous version stays installed, for going back.
    assert run(device.opt / "venv-0.1.0" / "bin" / "kiroku").stdout.strip() == "kiroku 0.1.0"
    commit = run("git", "-C", tmp_path / "checkout-0.2.0", "rev-parse", "HEAD").stdout.strip()
    assert f"commit {commit}" in (device.opt / "venv" / "kiroku-release").read_text()
    assert device.data.read_bytes() == b"the recordings' index"
    assert not list((device.root / "run").glob("kiroku-update.*/"))


def test_under_overlayroot_the_release_goes_into_the_lower_layer_and_a_failed_install_is_said(tmp_path, key,
                                                                                              device):
    release_file = release(tmp_path, key, "0.2.0")

    failed = device.update(release_file, overlayroot=True, install_fails=True)

    # overlayroot-chroot exits 0 whatever it ran: the updater still sees pip fail
    assert failed.returncode == 1 and "installing 0.2.0 failed (above)" in failed.stderr
    assert "No space left on device" in failed.stderr
    assert_untouched(device)

    done = device.update(release_file, overlayroot=True)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.2.0" and device.kiroku() == "kiroku 0.2.0"
    ran = (device.fakes / "chroot.log").read_text().splitlines()
    assert len(ran) >= 6, "the install, its mark and the lasting switch went through overlayroot-chroot"


def test_a_release_brings_its_wheels_so_the_device_needs_no_network(tmp_path, key, device):
    release_file = release(tmp_path, key, "0.2.0")
    with tarfile.open(release_file) as t:
        with tarfile.open(fileobj=t.extractfile("wheels.tar")) as wheels:
            assert wheels.getnames() == [WHEEL]
    # The index is gone by the time the device installs: the wheel must come in the release.
    released = (tmp_path / "index" / WHEEL).read_bytes()
    (tmp_path / "index" / WHEEL).unlink()

    done = device.update(release_file)

    assert done.returncode == 0, done.stderr
    installed = device.opt / "venv-0.2.0" / "wheels" / WHEEL
    assert installed.read_bytes() == released


def test_the_release_tool_says_which_wheel_it_could_not_fetch(tmp_path, key):
    checkout = make_checkout(tmp_path / "checkout", "0.2.0")
    (tmp_path / "index" / WHEEL).unlink()

    done = make_release(key, tmp_path / "releases", checkout)

    assert done.returncode != 0
    assert "tinydep" in done.stderr and "could not fetch the wheels" in done.stderr
    assert not (tmp_path / "releases").exists()


def test_only_the_previous_venv_is_kept(tmp_path, key, device):
    assert device.update(release(tmp_path, key, "0.2.0")).returncode == 0
    done = device.update(release(tmp_path, key, "0.3.0"))

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.3.0"
    assert sorted(p.name for p in device.opt.glob("venv-*")) == ["venv-0.2.0", "venv-0.3.0"]


@pytest.mark.parametrize("attack, message", [
    ("tampered tarball", "is not the one that was signed"),
    ("tampered manifest", "does not match this device's release key"),
    ("another key", "does not match this device's release key"),
    ("no signature", "has no signature"),
    ("tampered wheels", "wheels.tar in"),
    ("no wheels", "does not contain wheels.tar"),
])
def test_a_release_that_is_not_as_signed_is_refused(tmp_path, key, device, attack, message):
    good = release(tmp_path, key, "0.2.0")
    if attack == "tampered tarball":
        # Another tree's tarball under the signed manifest: what a substituted release looks like.
        other = make_checkout(tmp_path / "other", "0.2.0", broken=True)
        tarball = subprocess.run(["git", "-C", str(other), "archive", "--format=tar.gz",
                                  "--prefix=kiroku-0.2.0/", "HEAD"], capture_output=True, check=True).stdout
        bad = repack(good, tmp_path / "bad.tar", change={"kiroku-0.2.0.tar.gz": tarball})
    elif attack == "tampered manifest":
        with tarfile.open(good) as t:
            manifest = t.extractfile("manifest").read()
        bad = repack(good, tmp_path / "bad.tar", change={"manifest": manifest.replace(b"0.2.0", b"0.2.1", 1)})
    elif attack == "another key":
        other_key, _ = make_key(tmp_path / "someone-else.pem")
        done = make_release(other_key, tmp_path / "other", tmp_path / "checkout-0.2.0")
        assert done.returncode == 0, done.stderr
        bad = Path(done.stdout.strip())
    elif attack == "tampered wheels":
        # A wheel of someone else's under the signed manifest.
        other = io.BytesIO()
        with tarfile.open(fileobj=other, mode="w") as wheels:
            info = tarfile.TarInfo(WHEEL)
            info.size = 4
            wheels.addfile(info, io.BytesIO(b"evil"))
        bad = repack(good, tmp_path / "bad.tar", change={"wheels.tar": other.getvalue()})
    elif attack == "no wheels":
        bad = repack(good, tmp_path / "bad.tar", drop="wheels.tar")
    else:
        bad = repack(good, tmp_path / "bad.tar", drop="manifest.sig")

    done = device.update(bad)

    assert done.returncode != 0
    assert message in done.stderr
    assert_untouched(device)


@pytest.mark.parametrize("member", ["../escape.whl", "sub/folder.whl", "link.whl"])
def test_even_a_signed_release_unpacks_nothing_but_wheels(tmp_path, key, device, member):
    # Signed with the right key, by whoever holds it: the updater still unpacks wheel files only.
    bad = resigned(release(tmp_path, key, "0.2.0"), key, tmp_path, "wheels.tar", one_member_tar(member))

    done = device.update(bad)

    assert done.returncode != 0
    assert "holds more than wheel files" in done.stderr
    assert_untouched(device)
    assert not (tmp_path / "escape.whl").exists() and not (device.root / "run" / "escape.whl").exists()


def test_a_downgrade_is_refused_unless_asked_for(tmp_path, key, device):
    older = release(tmp_path, key, "0.0.9")

    done = device.update(older)

    assert done.returncode != 0
    assert "older than the installed 0.1.0" in done.stderr and "--allow-downgrade" in done.stderr
    assert_untouched(device)

    done = device.update(older, "--allow-downgrade")
    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.0.9"
    assert device.kiroku() == "kiroku 0.0.9"


def test_the_same_version_is_not_installed_again(tmp_path, key, device):
    done = device.update(release(tmp_path, key, "0.1.0"))

    assert done.returncode != 0
    assert "already installed" in done.stderr
    assert device.running == "venv-0.1.0" and device.restarts == 0


def test_a_release_whose_recorder_never_gets_ready_is_rolled_back(tmp_path, key, device):
    broken = release(tmp_path, key, "0.2.0", broken=True)

    # Crash-looping: systemd keeps restarting it, so only the timeout tells.
    done = device.update(broken, timeout=2)

    assert done.returncode != 0
    assert "did not get ready within 2s" in done.stderr and "0.1.0 runs again" in done.stderr
    assert device.running == "venv-0.1.0"
    # Restarted into the new version, then again into the old one: the old recorder runs.
    assert device.restarts == 2
    assert (device.fakes / "started").read_text().strip() == "venv-0.1.0"
    assert device.kiroku() == "kiroku 0.1.0"
    # A recorder that failed fast and often sits at systemd's start limit, which refuses a plain
    # restart: every restart, the one going back included, comes after a reset-failed.
    calls = (device.fakes / "systemctl.log").read_text().splitlines()
    assert all(calls[i - 1].startswith("reset-failed ") for i, call in enumerate(calls) if call.startswith("restart "))
    assert device.data.read_bytes() == b"the recordings' index"


def test_a_release_whose_recorder_is_skipped_goes_back_without_waiting_out_the_timeout(tmp_path, key, device):
    # A release that cannot be imported fails the unit's ExecCondition (kiroku kind): systemd
    # skips the recorder, which is then inactive with nothing queued. The counter records again
    # as soon as that is seen, not a minute later; its start job being queued first is no sign.
    broken = release(tmp_path, key, "0.2.0", broken=True)

    done = device.update(broken, timeout=600, pending=2, down="inactive")

    assert done.returncode != 0
    assert "stopped without starting" in done.stderr and "0.1.0 runs again" in done.stderr
    assert device.running == "venv-0.1.0" and device.kiroku() == "kiroku 0.1.0"
    assert device.restarts == 2
    calls = (device.fakes / "systemctl.log").read_text().splitlines()
    first, second = (i for i, call in enumerate(calls) if call.startswith("restart "))
    # It looked at the broken one's jobs until the queued start had run, and then went back.
    assert sum(call.startswith("list-jobs ") for call in calls[first:second]) == 3
    assert device.data.read_bytes() == b"the recordings' index"


def calls(device: Device) -> list[str]:
    return (device.fakes / "systemctl.log").read_text().splitlines()


def test_the_restart_waits_for_a_recording_to_end(tmp_path, key, device):
    release_file = release(tmp_path, key, "0.2.0")

    done = device.update(release_file, busy=2)

    assert done.returncode == 0, done.stderr
    assert "a recording is under way: waiting for it to end" in done.stderr
    log = calls(device)
    first_restart = next(i for i, call in enumerate(log) if call.startswith("restart "))
    looks = [i for i, call in enumerate(log) if call.startswith("ctl ")]
    assert len(looks) == 3 and looks[-1] < first_restart, "restarted only once the recorder said it was idle"
    assert device.running == "venv-0.2.0"


def test_a_recording_that_does_not_end_leaves_the_running_version(tmp_path, key, device):
    done = device.update(release(tmp_path, key, "0.2.0"), busy=1000, idle_timeout=2)

    assert done.returncode != 0
    assert "a recording has been under way for 2s: nothing was switched" in done.stderr
    assert device.running == "venv-0.1.0" and device.restarts == 0
    assert not (device.opt / "venv-0.2.0").exists(), "the new venv is not left half-adopted"


def test_a_recorder_slow_to_answer_does_not_stretch_the_wait(tmp_path, key, device):
    # each look at a recording that goes on takes 100 s (a recorder under load): the wait ends
    # after the time it says, not after that many looks
    done = device.update(release(tmp_path, key, "0.2.0"), busy=1000, idle_timeout=900, idle_poll=0, ctl_takes=100)

    assert done.returncode != 0
    assert "a recording has been under way for 900s: nothing was switched" in done.stderr
    looks = [call for call in calls(device) if call.startswith("ctl ")]
    assert len(looks) <= 10, f"{len(looks)} looks at the recorder: the wait counted looks, not time"
    assert device.running == "venv-0.1.0" and device.restarts == 0


def test_a_recorder_that_does_not_answer_counts_as_recording(tmp_path, key, device):
    # it runs, but cannot say whether it records: the update must not cut what it cannot see
    done = device.update(release(tmp_path, key, "0.2.0"), ctl_refuses=True, idle_timeout=2)

    assert done.returncode != 0
    assert "the running recorder does not answer (kiroku ctl: not allowed" in done.stderr
    assert "nothing was switched" in done.stderr
    assert device.running == "venv-0.1.0" and device.restarts == 0


def test_a_continuous_recording_does_not_hold_an_update_back(tmp_path, key, device):
    # it never ends: the update cuts it once (the recorder closes its segments on the way down)
    done = device.update(release(tmp_path, key, "0.2.0"), busy=1000, mode="continuous", idle_timeout=2)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.2.0"


def test_a_release_whose_web_ui_keeps_restarting_is_rolled_back(tmp_path, key, device):
    # Active at any one look, but systemd restarts it again and again
    done = device.update(release(tmp_path, key, "0.2.0"), flapping="venv-0.2.0")

    assert done.returncode != 0
    assert "fell over" in done.stderr and "0.1.0 runs again" in done.stderr
    assert device.running == "venv-0.1.0"


def test_an_update_stopped_after_the_switch_goes_back(tmp_path, key, device):
    done = device.update(release(tmp_path, key, "0.2.0"), kill_at="venv-0.2.0")

    assert done.returncode == 143
    assert "stopped before 0.2.0 was seen to work: switching back to venv-0.1.0" in done.stderr
    assert device.running == "venv-0.1.0"
    assert (device.fakes / "started").read_text().strip() == "venv-0.1.0", "the old version was restarted"
    assert not list((device.root / "run").glob("kiroku-update.*/"))


def test_the_release_tool_refuses_uncommitted_changes(tmp_path, key):
    checkout = make_checkout(tmp_path / "checkout", "0.2.0")
    (checkout / "pyproject.toml").write_text('[project]\nname = "kiroku"\nversion = "0.2.1"\n')

    done = run(RELEASE, "--key", key, "--out", tmp_path / "releases", "--repo", checkout)

    assert done.returncode != 0 and "commit your changes first" in done.stderr
    assert not (tmp_path / "releases").exists()


def test_a_release_can_be_checked_by_hand_with_openssl(tmp_path, key):
    release_file = release(tmp_path, key, "0.2.0")
    out = tmp_path / "unpacked"
    out.mkdir()
    run("tar", "-xf", release_file, "-C", out).check_returncode()

    done = run("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", key.with_suffix(".pub"), "-rawin",
               "-in", out / "manifest", "-sigfile", out / "manifest.sig")

    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout
    sha = run("sha256sum", out / "kiroku-0.2.0.tar.gz").stdout.split()[0]
    assert f"sha256 {sha}\n" in (out / "manifest").read_text()
