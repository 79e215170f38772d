"""OS updates: image-build/release os bundles Debian packages, kiroku-update installs them.

The device is test_update's root laid out like the image. apt and dpkg are fakes (apt's
dependency check is against a list of installed packages; "installing" unpacks each package
with the real dpkg-deb into the root), as are systemctl and systemd-run; the signature, the
checks, what apt is handed and the restart's wait for a quiet counter are the real script's.
The boot test (image-build/boottest/run.py) installs a bundle with the real apt in the
read-only root's lower layer, and boots into it.
"""
from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import test_update, test_webui
from tests.test_update import (RELEASE, UPDATE, Device, assert_untouched, make_checkout, make_key, one_member_tar,
                               repack, resigned, run)

# apt-get as kiroku-update uses it: `install [--simulate|--yes] OPTIONS... DEB...`. A package's
# Depends (names only) must be installed ($FAKE_STATE/installed: "name version" lines) or among
# the packages given, else it refuses, as apt does, before anything changes — unless apt was
# left its package lists (no -o Dir::State::Lists=EMPTY-FOLDER): then what the archive has
# ($FAKE_STATE/archive) would do, fetched from the network, as the real apt would. With
# $FAKE_APT_FAILS it fails after unpacking the first package (a package's script failing halfway).
FAKE_APT_GET = r"""#!/bin/sh
echo "apt-get $*" >>"$FAKE_STATE/systemctl.log"
[ "$1" = install ] || exit 100
mode=install
debs=
archive=$FAKE_STATE/archive
for arg in "$@"; do
    case "$arg" in
        --simulate) mode=simulate ;;
        Dir::State::Lists=*) [ -d "${arg#*=}" ] && [ -z "$(ls -A "${arg#*=}")" ] && archive=/dev/null ;;
        *.deb) debs="$debs $arg" ;;
    esac
done
given=$(for d in $debs; do dpkg-deb -f "$d" Package; done)
for d in $debs; do
    for gone in $(dpkg-deb -f "$d" Conflicts | tr ',' '\n' | sed 's/(.*)//; s/ //g'); do
        if grep -q "^$gone " "$FAKE_STATE/installed"; then
            echo "Remv $gone [$(sed -n "s/^$gone //p" "$FAKE_STATE/installed")]"
            [ "$mode" = simulate ] || sed -i "/^$gone /d" "$FAKE_STATE/installed"
        fi
    done
    for need in $(dpkg-deb -f "$d" Depends | tr ',' '\n' | sed 's/(.*)//; s/ //g'); do
        if ! printf '%s\n' $given | grep -qx "$need" && ! grep -q "^$need " "$FAKE_STATE/installed" 2>/dev/null; then
            if grep -qx "$need" "$archive"; then
                echo "Inst $need (archive)"
                [ "$mode" = simulate ] || { echo "E: Failed to fetch $need: no route to the archive" >&2; exit 100; }
                continue
            fi
            echo "E: Unmet dependencies. $(dpkg-deb -f "$d" Package) : Depends: $need but it is not installable" >&2
            exit 100
        fi
    done
done
[ "$mode" = install ] || { echo "Inst $given"; exit 0; }
for d in $debs; do
    [ "$(dpkg-deb -f "$d" Package)" != "${FAKE_APT_SKIPS:-}" ] || continue
    dpkg-deb -x "$d" "$KIROKU_ROOT"
    echo "$(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version)" >>"$FAKE_STATE/installed"
    if [ -n "${FAKE_APT_FAILS:-}" ]; then
        echo "dpkg: error processing package $(dpkg-deb -f "$d" Package) (--configure)" >&2
        exit 100
    fi
done
"""

FAKE_DPKG = r"""#!/bin/sh
echo "dpkg $*" >>"$FAKE_STATE/systemctl.log"
case "$1" in
    --print-architecture) echo "${FAKE_ARCH:-arm64}" ;;
    --configure) ;;
    *) exit 2 ;;
esac
"""

# df -Pk FOLDER, as coreutils prints it, with $FAKE_RUN_FREE kilobytes available.
FAKE_DF = r"""#!/bin/sh
echo "Filesystem 1024-blocks Used Available Capacity Mounted on"
echo "tmpfs 400000 0 $FAKE_RUN_FREE 0% /run"
"""

FAKE_SYSTEMD_RUN = r"""#!/bin/sh
echo "systemd-run $*" >>"$FAKE_STATE/systemctl.log"
touch "$FAKE_STATE/os-reboot"
"""

# dpkg-query --admindir=DIR -W -f='${Package} ${db:Status-Abbrev}${Version}\n' NAME:ARCH..., from the
# fake apt's record; like dpkg-query, it says which it does not know and exits 1, after the rest
FAKE_DPKG_QUERY = r"""#!/bin/sh
shift 3
rc=0
for query in "$@"; do
    name=${query%%:*}
    version=$(sed -n "s/^$name //p" "$FAKE_STATE/installed" | tail -n1)
    if [ -n "$version" ]; then
        printf '%s ii %s\n' "$name" "$version"
    else
        echo "dpkg-query: no packages found matching $query" >&2
        rc=1
    fi
done
exit $rc
"""


def make_deb(out: Path, package: str, version: str, arch: str = "arm64", depends: str = "",
             conflicts: str = "", payload: int = 0) -> Path:
    """A real Debian package, built with dpkg-deb, that installs /usr/share/PACKAGE/VERSION
    (and ``payload`` bytes that do not compress, as a kernel's modules hardly do)."""
    out.mkdir(parents=True, exist_ok=True)
    tree = out / f"{package}-{version}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "share" / package).mkdir(parents=True)
    (tree / "usr" / "share" / package / "version").write_text(f"{version}\n")
    control = f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@example.org>\n" \
              f"Description: a test package\n"
    (tree / "DEBIAN" / "control").write_text(control + (f"Depends: {depends}\n" if depends else "")
                                             + (f"Conflicts: {conflicts}\n" if conflicts else ""))
    if payload:
        (tree / "usr" / "share" / package / "payload").write_bytes(os.urandom(payload))
    deb = out / f"{package}_{version}_{arch}.deb"
    run("dpkg-deb", "--root-owner-group", *(["-Znone"] if payload else []), "--build", tree, deb).check_returncode()
    return deb


def bundle(key: Path, out: Path, debs: list[Path], version: str = "2026.11.29") -> subprocess.CompletedProcess:
    """The release tool, from a checkout whose image has no release key of its own yet."""
    checkout = out.parent / "checkout"
    if not checkout.exists():
        make_checkout(checkout, "0.1.0")
    return run(RELEASE, "os", "--key", key, "--out", out, "--version", version, "--repo", checkout, *debs)


class OsDevice(Device):
    """test_update's device under overlayroot (its lower layer the root itself), with apt, dpkg,
    systemd-run and overlayroot-chroot faked, and openssl 3.0.2 installed."""

    def __init__(self, root: Path, public_key: Path, fakes: Path):
        super().__init__(root, public_key, fakes)
        for name, text in (("apt-get", FAKE_APT_GET), ("dpkg", FAKE_DPKG), ("systemd-run", FAKE_SYSTEMD_RUN),
                           ("dpkg-query", FAKE_DPKG_QUERY), ("df", FAKE_DF)):
            (fakes / name).write_text(text)
            (fakes / name).chmod(0o755)
        (fakes / "installed").write_text("libc6 2.41-12\nopenssl 3.0.2-1\n")
        (fakes / "archive").write_text("libcurl4t64\n")  # what the image's apt lists would offer

    def env(self, arch: str = "arm64", apt_fails: bool = False, apt_skips: str = "", reboot_wait: int = 600,
            chroot: str = "", run_free_mb: int = 0, **settings) -> dict:
        """With ``run_free_mb``, df says /run has that much free."""
        df = {"KIROKU_DF": str(self.fakes / "df"), "FAKE_RUN_FREE": str(run_free_mb * 1024)} if run_free_mb else {}
        return {**super().env(overlayroot=True, **settings), **df, "KIROKU_APT_GET": str(self.fakes / "apt-get"),
                "KIROKU_DPKG": str(self.fakes / "dpkg"), "KIROKU_DPKG_QUERY": str(self.fakes / "dpkg-query"),
                "KIROKU_SYSTEMD_RUN": str(self.fakes / "systemd-run"),
                "KIROKU_REBOOT_WAIT": str(reboot_wait), "FAKE_CHROOT_MODE": chroot,
                "FAKE_ARCH": arch, "FAKE_APT_FAILS": "yes" if apt_fails else "", "FAKE_APT_SKIPS": apt_skips}

    @property
    def in_lower_layer(self) -> list[str]:
        """The commands kiroku-update ran through overlayroot-chroot."""
        path = self.fakes / "chroot.log"
        return path.read_text().splitlines() if path.exists() else []

    def reboot_when_quiet(self, **settings) -> subprocess.CompletedProcess:
        return run(UPDATE, "--reboot-when-quiet", env=self.env(**settings))

    @property
    def log(self) -> list[str]:
        path = self.fakes / "systemctl.log"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def os_update(self) -> str | None:
        path = self.root / "etc" / "kiroku" / "os-update"
        if not path.exists():
            return None
        return next(line.split()[1] for line in path.read_text().splitlines() if line.startswith("version "))

    def has(self, package: str) -> str | None:
        path = self.root / "usr" / "share" / package / "version"
        return path.read_text().strip() if path.exists() else None


key = test_update.key


@pytest.fixture
def device(tmp_path, key) -> OsDevice:
    return OsDevice(tmp_path / "root", key.with_suffix(".pub"), tmp_path / "fakes")


@pytest.fixture
def debs(tmp_path) -> list[Path]:
    out = tmp_path / "debs"
    return [make_deb(out, "openssl", "3.0.2-1+deb13u1", depends="libc6 (>= 2.34)"),
            make_deb(out, "ca-certificates", "20250419", arch="all", depends="openssl")]


def made(done: subprocess.CompletedProcess) -> Path:
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_a_signed_os_update_is_installed_from_its_own_packages_then_the_device_restarts(tmp_path, key, device,
                                                                                        debs):
    bundle_file = made(bundle(key, tmp_path / "out", debs))
    assert bundle_file.name == "kiroku-os-2026.11.29.os.tar"
    manifest = tarfile.open(bundle_file).extractfile("manifest").read().decode()
    assert manifest.startswith("kiroku-os 1\nversion 2026.11.29\n") and "architecture arm64\n" in manifest
    assert "package ca-certificates 20250419 all\npackage openssl 3.0.2-1+deb13u1 arm64\n" in manifest

    done = device.update(bundle_file)

    assert done.returncode == 0, done.stderr
    assert "OS update 2026.11.29 is installed" in done.stderr
    assert device.has("openssl") == "3.0.2-1+deb13u1" and device.has("ca-certificates") == "20250419"
    assert device.os_update == "2026.11.29"
    log = device.log
    # an interrupted earlier install is finished first; apt is asked before it changes anything,
    # takes only the bundle's packages, never the network, and keeps the image's configuration
    assert [line.split()[0] for line in log if line.startswith(("dpkg --configure", "apt-get"))] == \
        ["dpkg", "apt-get", "apt-get"]
    simulate, install = (line for line in log if line.startswith("apt-get"))
    assert "--simulate" in simulate and "--yes" in install
    for call in (simulate, install):
        assert "Dpkg::Options::=--force-confold" in call and "Dir::Cache::pkgcache=" in call
        assert sorted(Path(a).name for a in call.split() if a.endswith(".deb")) == sorted(d.name for d in debs)
    # all of it in overlayroot's lower layer, where it lasts
    ran = device.in_lower_layer
    assert [c.split()[2] for c in ran if c.startswith("env ")] == [str(device.fakes / n) for n in
                                                                  ("dpkg", "apt-get", "apt-get")]
    assert any(c.startswith("cp ") and c.endswith("/etc/kiroku/os-update") for c in ran)
    # the restart waits for a quiet counter, in its own unit: the page shows the outcome first
    [later] = [line for line in log if line.startswith("systemd-run")]
    assert "--on-active=30" in later and later.endswith(f"{UPDATE} --reboot-when-quiet")
    # the firmware, its services and the footage are as they were
    assert_untouched(device)

    # the same bundle again, and an older one: refused, nothing run
    again = device.update(bundle_file)
    assert again.returncode == 1 and "OS update 2026.11.29 is already installed" in again.stderr
    older = made(bundle(key, tmp_path / "out", debs, version="2026.10.1"))
    refused = device.update(older)
    assert refused.returncode == 1 and "older than the installed 2026.11.29" in refused.stderr
    assert sum(line.startswith("apt-get") for line in device.log) == 2
    done = device.update(older, "--allow-downgrade")
    assert done.returncode == 0, done.stderr
    assert "--allow-downgrades" in [line for line in device.log if line.startswith("apt-get")][-1]
    assert device.os_update == "2026.10.1"
    # the restart arranged the first time has not happened yet: it is not arranged twice
    assert "a restart is already arranged" in done.stderr
    assert sum(line.startswith("systemd-run") for line in device.log) == 1


def test_the_restart_waits_until_no_recording_is_under_way(device):
    done = device.reboot_when_quiet(busy=2)

    assert done.returncode == 0, done.stderr
    assert "a recording is under way: restarting for the OS update once it has ended" in done.stderr
    assert device.log == ["ctl status --json"] * 3 + ["reboot"]


def test_the_restart_waits_for_an_update_under_way(device):
    import fcntl

    (device.root / "run").mkdir(exist_ok=True)
    with open(device.root / "run" / "kiroku-update.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another update is installing
        waiting = subprocess.Popen([str(UPDATE), "--reboot-when-quiet"], env=device.env(), text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            said = waiting.stderr.readline()  # it says so once it has found the lock taken, however long that takes
            assert "another update is running: restarting once it has finished" in said, said
            assert "reboot" not in device.log, "no restart while another update holds the lock"
        except BaseException:
            waiting.kill()
            raise
    rest = waiting.communicate(timeout=60)[1]
    assert waiting.returncode == 0, said + rest
    assert device.log[-1] == "reboot", "it restarted once the lock was free"


def test_the_restart_does_not_wait_for_ever(device):
    done = device.reboot_when_quiet(busy=100_000, reboot_wait=2)  # a recording that never ends

    assert done.returncode == 0, done.stderr
    assert "still recording after 2s (or the recorder does not answer): restarting" in done.stderr
    assert device.log[-1] == "reboot" and "ctl status --json" in device.log


def test_overlayroot_chroot_that_ran_nothing_or_failed_after_is_told_apart(tmp_path, key, device, debs):
    bundle_file = made(bundle(key, tmp_path / "out", debs))

    skipped = device.update(bundle_file, chroot="skip")
    assert skipped.returncode == 1 and "overlayroot-chroot ran nothing (its exit status 0)" in skipped.stderr
    assert device.os_update is None

    # its clean-up failing after the command succeeded is not the command failing
    done = device.update(bundle_file, chroot="cleanup-fails")
    assert done.returncode == 0, done.stderr
    assert device.os_update == "2026.11.29" and device.has("openssl") == "3.0.2-1+deb13u1"


def test_an_os_update_for_another_board_is_refused(tmp_path, key, device, debs):
    bundle_file = made(bundle(key, tmp_path / "out", debs))

    done = device.update(bundle_file, arch="armhf")

    assert done.returncode == 1
    assert "is an OS update for arm64, and this device is armhf: nothing was installed" in done.stderr
    assert device.has("openssl") is None and device.os_update is None
    assert not any(line.startswith(("apt-get", "systemd-run")) for line in device.log)


def test_a_bundle_larger_than_run_has_room_for_is_refused_before_anything_is_unpacked(tmp_path, key, device):
    kernel = make_deb(tmp_path / "debs", "linux-image-rpi-v8", "1:6.12.47-1+rpt1", payload=40 * 2**20)
    bundle_file = made(bundle(key, tmp_path / "out", [kernel]))

    done = device.update(bundle_file, run_free_mb=64)  # a Pi with little memory: /run is a tenth of it

    assert done.returncode == 1
    assert "needs about 96 MB in /run to unpack its packages, and /run has 64 MB free" in done.stderr
    assert "nothing was installed" in done.stderr
    assert not any(line.startswith(("dpkg --configure", "apt-get", "systemd-run")) for line in device.log)
    assert device.has("linux-image-rpi-v8") is None and device.os_update is None
    assert not [p for p in (device.root / "run").glob("kiroku-update.*") if p.is_dir()], "its work folder is gone"


def test_packages_that_need_what_the_device_lacks_change_nothing(tmp_path, key, device):
    deb = make_deb(tmp_path / "debs", "curl", "8.14.1-2", depends="libcurl4t64")
    bundle_file = made(bundle(key, tmp_path / "out", [deb]))

    done = device.update(bundle_file)

    assert done.returncode == 1
    assert "Depends: libcurl4t64 but it is not installable" in done.stderr
    assert "do not fit this device's system (apt, above): nothing was installed" in done.stderr
    assert device.has("curl") is None and device.os_update is None
    assert [line for line in device.log if line.startswith("apt-get")] and \
        all("--simulate" in line for line in device.log if line.startswith("apt-get"))
    assert not any(line.startswith("systemd-run") for line in device.log)


def test_packages_that_would_take_others_away_change_nothing(tmp_path, key, device):
    deb = make_deb(tmp_path / "debs", "libssl3t64", "3.5.1-1", conflicts="openssl")
    bundle_file = made(bundle(key, tmp_path / "out", [deb]))

    done = device.update(bundle_file)

    assert done.returncode == 1 and "would remove openssl: refused, nothing was installed" in done.stderr
    assert device.has("libssl3t64") is None and device.os_update is None
    assert "openssl 3.0.2-1" in (device.fakes / "installed").read_text()
    assert all("--simulate" in line for line in device.log if line.startswith("apt-get"))


def test_a_package_apt_did_not_install_is_noticed(tmp_path, key, device, debs):
    bundle_file = made(bundle(key, tmp_path / "out", debs))

    done = device.update(bundle_file, apt_skips="ca-certificates")  # apt said all was well

    assert done.returncode == 1
    assert "after apt, dpkg does not have: ca-certificates 20250419" in done.stderr
    assert "is not fully installed" in done.stderr and device.os_update is None
    assert not any(line.startswith("systemd-run") for line in device.log)


@pytest.mark.parametrize("member", ["../escape.deb", "sub/folder.deb", "link.deb", "notes.txt"])
def test_even_a_signed_bundle_unpacks_nothing_but_packages(tmp_path, key, device, debs, member):
    bad = resigned(made(bundle(key, tmp_path / "out", debs)), key, tmp_path, "debs.tar", one_member_tar(member))

    done = device.update(bad)

    assert done.returncode == 1 and "holds more than package files" in done.stderr
    assert not any(line.startswith(("apt-get", "dpkg --configure")) for line in device.log)
    assert not (device.root / "run" / "escape.deb").exists() and device.os_update is None


def test_an_install_that_fails_halfway_says_so_and_is_not_marked_done(tmp_path, key, device, debs):
    bundle_file = made(bundle(key, tmp_path / "out", debs))

    done = device.update(bundle_file, apt_fails=True)

    assert done.returncode == 1
    assert "the system may be partly updated" in done.stderr and "Run kiroku-update with the same file" in done.stderr
    assert device.os_update is None, "not marked installed: the same file is taken again"
    assert not any(line.startswith("systemd-run") for line in device.log)
    assert device.update(bundle_file).returncode == 0
    assert device.os_update == "2026.11.29"


@pytest.mark.parametrize("change", ["debs", "manifest", "signature", "other key"])
def test_a_changed_os_update_is_refused_before_apt_runs(tmp_path, key, device, debs, change):
    bundle_file = made(bundle(key, tmp_path / "out", debs))
    with tarfile.open(bundle_file) as tar:
        manifest = tar.extractfile("manifest").read()
        debs_tar = tar.extractfile("debs.tar").read()
    if change == "debs":
        changed = repack(bundle_file, tmp_path / "changed.tar", change={"debs.tar": debs_tar + b"\0" * 512})
        said = "debs.tar in"
    elif change == "manifest":
        changed = repack(bundle_file, tmp_path / "changed.tar",
                         change={"manifest": manifest.replace(b"version 2026.11.29", b"version 2026.12.1")})
        said = "the signature of"
    elif change == "signature":
        changed = repack(bundle_file, tmp_path / "changed.tar", drop="manifest.sig")
        said = "has no signature"
    else:
        other = make_key(tmp_path / "other.pem")[0]
        changed = made(bundle(other, tmp_path / "other-out", debs))
        said = "does not match this device's release key"

    done = device.update(changed)

    assert done.returncode == 1 and said in done.stderr
    assert device.has("openssl") is None and device.os_update is None
    assert not any(line.startswith(("apt-get", "dpkg --configure")) for line in device.log)


def test_the_release_tool_makes_a_bundle_for_one_architecture_of_packages_only(tmp_path, key):
    out = tmp_path / "debs"
    arm = make_deb(out, "openssl", "3.0.2-1", arch="arm64")
    x86 = make_deb(out, "libc6", "2.41-12", arch="amd64")
    mixed = bundle(key, tmp_path / "out", [arm, x86])
    assert mixed.returncode == 1 and "one bundle is for one architecture" in mixed.stderr
    not_a_deb = out / "notes.deb"
    not_a_deb.write_text("not a package")
    refused = bundle(key, tmp_path / "out", [arm, not_a_deb])
    assert refused.returncode == 1 and "notes.deb is not a Debian package" in refused.stderr
    bad_version = bundle(key, tmp_path / "out", [arm], version="November")
    assert bad_version.returncode == 1 and "not dotted numbers" in bad_version.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# -- from the admin page ----------------------------------------------------------------------

server, client = test_webui.server, test_webui.client


def test_a_manager_installs_an_os_update_from_the_admin_page(server, data_dir, vault, tmp_path, key, device, debs):
    from tests.test_update_web import audit, device_acts, outcome, page, upload
    from tests.webui_helpers import Api, first_run

    client = test_webui.make_app(data_dir, KIROKU_UPDATE_LOG_EVERY=0.2,
                                 KIROKU_OS_UPDATE=str(device.root / "etc" / "kiroku" / "os-update")).test_client()
    first_run(client)
    before = page(client)
    assert re.search(r'id="os-update">出荷時のまま<', before) and "kiroku-os-版.os.tar" in before
    # with a kernel's size in it: more than any other form may be
    kernel = make_deb(tmp_path / "debs", "linux-image-rpi-v8", "1:6.12.47-1+rpt1", payload=20 * 2**20)
    bundle_file = made(bundle(key, tmp_path / "out", [*debs, kernel]))
    assert bundle_file.stat().st_size > 20 * 2**20
    with tarfile.open(bundle_file) as t, tarfile.open(fileobj=t.extractfile("debs.tar")) as packages:
        # named as the archive names it: the epoch's colon is not in it
        assert "linux-image-rpi-v8_6.12.47-1+rpt1_arm64.deb" in packages.getnames()

    assert upload(client, bundle_file, name=bundle_file.name).status_code == 302

    update_id = (data_dir / "update" / "request").read_text().strip()
    [asked] = audit(vault, "update.request")
    assert asked["subject"] == "2026.11.29" and asked["detail"]["kind"] == "os" and asked["detail"]["from"] is None
    done = device_acts(data_dir, device)
    assert done.returncode == 0, done.stderr
    assert outcome(data_dir, update_id)["state"] == "installed"
    assert device.has("openssl") == "3.0.2-1+deb13u1" and device.has("linux-image-rpi-v8") == "1:6.12.47-1+rpt1"
    after = page(client)
    assert re.search(r'id="os-update">2026\.11\.29<', after)
    row = re.search(r'<tr class="update-installed">(.*?)</tr>', after, re.S)[1]
    assert "OS 更新 — → 2026.11.29" in row and "録画中でないときに装置が再起動" in row
    assert "the device restarts to run it once no recording is under way" in row, "kiroku-update's words"
    assert re.search(r'id="software-os">OS 更新: 2026\.11\.29<', client.get("/admin/").get_data(as_text=True))
    software = Api(client).get("/api/v1/dashboard").get_json()["software"]
    assert software["os_update"] == "2026.11.29" and software["last_update"]["kind"] == "os"
    [logged] = audit(vault, "update.installed")
    assert logged["subject"] == "2026.11.29"
    # the firmware is as it was
    assert device.running == "venv-0.1.0"
