#!/usr/bin/env python3
"""The full-boot test of the image's overlay, without a Pi.

A Debian trixie root file system (mmdebstrap) with the image's Python stack from apt
(packages.txt, less what only Raspberry Pi's archive has) gets the firmware from the same
install-firmware the image's build runs — units, crypttab, the data partition's mount,
first-boot scripts, the venv install-venv makes — with ``KEY_SOURCE=file:`` standing in for
the Pi's firmware and the recorder told --simulate (qemu has no camera). It is written to a disk image
without loop devices (``mkfs.ext4 -d``, ``sfdisk``, a copy at the partition's offset)
laid out like the Pi's card (a boot partition, then root), and booted with Debian's
kernel in qemu under software emulation, so all nine units the image enables start as
they would on the Pi, on overlayroot's read-only root. A small test unit reports, on the
serial console, whether the data partition is mounted and how many boots it has seen,
whether the recorder reached READY under its hardened unit, whether the web UI serves
HTTPS on port 443 as its unprivileged user with the certificate the console banner names,
which units failed, and whether the root is an overlay that forgot what the boot before
wrote to it; then it powers off. Then:

  1. first boot provisions (Adiantum: the emulated CPU has no AES instructions, like a
     Pi 4), held back for longer than crypttab's wait for the partition, as a large card's
     formatting would be; the second finds the partition, the first boot's data and its
     certificate;
  2. the manager uploads, on the admin page over HTTPS, two releases the release tool
     signed with the test's own key (its public half in the image); the path unit starts
     the root helper, whose kiroku-update installs them offline: a newer one, into the
     read-only lower layer through overlayroot-chroot, switched to, and a broken one after
     it, whose recorder cannot start, so it is rolled back; the page follows each to its
     outcome while the update restarts the web UI under it. Then an OS update (one
     package of the test's own, made with dpkg-deb): apt installs it into the lower layer
     from the bundle, and a restart is arranged (the report stops it, to power off itself);
  3. the next boot runs the update and the OS update (they are in the lower layer), and the
     card "flashed again" (the image's partition table, without partition 3) finds its
     finished partition again, data and all (that data survives boots is shown by 1 to 3);
  4. a power cut (qemu killed) right after the partition is added, and one in the middle
     of formatting (with AES instructions, like a Pi 5): each next boot finishes the
     partition and mounts it.

Usage: run.py [--work DIR]    (as root; needs mmdebstrap, qemu-system-x86, e2fsprogs, fdisk, git,
                              openssl, and pip, to fetch requirements.lock's wheels)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE_BUILD = HERE.parent
OVERLAY = IMAGE_BUILD / "overlay"
REPO = IMAGE_BUILD.parent
# Only in Raspberry Pi's archive: the camera stack and lgpio (the firmware simulates camera and
# pins off a Pi), and rpi-fw-crypto (KEY_SOURCE=file: stands in for the firmware's HMAC).
PI_ONLY = {"python3-picamera2", "python3-lgpio", "rpifwcrypto"}
# Raspberry Pi's archive replaces Debian's gpiozero 1.6 with the 2.x kiroku needs (pyproject.toml);
# without that archive the test puts the same release from PyPI (this lock) where a system package
# would shadow apt's (/usr/local), so every venv made with --system-site-packages sees it, as on
# the Pi.
PI_ARCHIVE_LOCK = HERE / "pi-archive.lock"
IMAGE_PACKAGES = [line.strip() for line in (IMAGE_BUILD / "packages.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#") and line.strip() not in PI_ONLY]
PACKAGES = ["linux-image-amd64", "systemd-sysv", "udev", "kmod", "util-linux", *IMAGE_PACKAGES]
VENV_IMPORTS = "av, numpy, cryptography, flask, flask_wtf, cheroot, argon2, fpdf, gpiozero, segno, cv2, sounddevice"
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
SECTOR = 512
MIB = 2**20
BOOT_START, BOOT_SECTORS = 8192, 256 * 2048  # a 256 MiB boot partition, as on the Pi's card
ROOT_SIZE = "4G"
DISK_BYTES = 10 * 2**30
BOOT_TIMEOUT = 600  # seconds: software emulation is slow, and a first boot formats

REPORT = """#!/bin/sh
# Boot test only: say what this boot found, keep count on the data partition, power off.
# The line goes through the kernel's log, which the kernel prints on the serial console
# whoever holds the tty: written to the tty itself, it raced agetty's hang-up of that tty.
say() { echo "KIROKU-BOOTTEST $*" > /dev/kmsg; }
state() { systemctl show -p ActiveState --value "$1"; }
if mountpoint -q /var/lib/kiroku; then
    n=$(( $(cat /var/lib/kiroku/boots 2>/dev/null || echo 0) + 1 ))
    echo "$n" > /var/lib/kiroku/boots
    sync
    part=$(cryptsetup status kiroku-data | awk '$1 == "device:" { print $2 }')
    label=$(blkid -p -s LABEL -o value "$part")
    cipher=$(cryptsetup luksDump "$part" | awk '$1 == "cipher:" { print $2; exit }')
    # MiB between the partition's end and the disk's: what a flashing tool's wipe of the end may take
    # ($part may be a /dev/disk/by-* link; sysfs knows the partition by its kernel name)
    sys=$(readlink -f "/sys/class/block/$(basename "$(readlink -f "$part")")")
    tail=$(echo $(( ($(cat "${sys%/*}/size") - $(cat "$sys/start") - $(cat "$sys/size")) / 2048 )) \
           2>/dev/null)  # sh dies of a bad $((…)): in a subshell, so that only it does
    tail=${tail:-none}
    owner=$(stat -c %U:%G:%a /var/lib/kiroku)
    # Type=notify: the recorder is active only once it has said READY=1
    i=0
    while [ "$(state kiroku-recorder.service)" = activating ] && [ $i -lt 300 ]; do sleep 1; i=$((i + 1)); done
    recorder=$(state kiroku-recorder.service)
    web=$(python3 /usr/lib/kiroku-boottest/web 2>/dev/kmsg)
    webuser=$(stat -c %U "/proc/$(systemctl show -p MainPID --value kiroku-web.service)" 2>/dev/null || echo none)
    banner=$(tr -d ':' < /run/issue.d/50-kiroku.issue 2>/dev/null | grep -Eio '[0-9a-f]{64}' | tr A-F a-f || true)
    bannerwarns=$(grep -c WARNING /run/issue.d/50-kiroku.issue 2>/dev/null || true)
    calls=$(state kiroku-call-recorder.service)
    failed=$(systemctl list-units --failed --plain --no-legend | awk '{ print $1 }' | paste -sd, -)
    # the read-only root: an overlay whose writes are gone at the next boot
    root=$(findmnt -no FSTYPE /)
    leftover=$([ -e /var/tmp/kiroku-boottest-written ] && echo yes || echo no)
    echo "written by the boot before" > /var/tmp/kiroku-boottest-written
    # updates the test asked for on the kernel's command line (kiroku_boottest_update=A.tar,B.tar),
    # uploaded on the admin page as the manager would; the device's path unit and root helper
    # install them; the upload script prints what kiroku-update said, as the page shows it
    updates= outcomes=
    for release in $(sed -n 's/.*kiroku_boottest_update=\\([^ ]*\\).*/\\1/p' /proc/cmdline | tr , ' '); do
        outcome=$(python3 /usr/lib/kiroku-boottest/upload "/usr/lib/kiroku-boottest/releases/$release" 2>/dev/kmsg)
        outcomes="$outcomes${outcomes:+,}${outcome:-none}"
        updates="$updates${updates:+,}$(sed -n 's/^version //p' /opt/kiroku/venv/kiroku-release)"
    done
    venv=$(readlink /opt/kiroku/venv)
    # an OS update among them: its package, the version kiroku-update recorded, and the restart
    # it arranged (stopped here: this script powers off when it is done)
    os=$(dpkg-query -W -f='${Version}' kiroku-boottest-probe 2>/dev/null || true)
    osupdate=$(sed -n 's/^version //p' /etc/kiroku/os-update 2>/dev/null || true)
    osreboot=$(systemctl is-active kiroku-os-reboot.timer 2>/dev/null || true)
    systemctl stop kiroku-os-reboot.timer kiroku-os-reboot.service 2>/dev/null || true
    # the services as the updates left them (as this boot started them when there were none)
    after="$(state kiroku-recorder.service),$(state kiroku-web.service)"
    # what the failed units, a recorder that never got ready or a web UI that did not answer
    # said (the journal is in memory), with the load and whether anything listens on 443
    [ "${web#web=200 }" = "$web" ] && echo "journal load: $(cat /proc/loadavg);" \
        "listening on 443: $(grep -c ':01BB 00000000:0000 0A' /proc/net/tcp)" > /dev/kmsg
    for unit in ${failed:+$(echo "$failed" | tr , ' ')} $([ "$recorder" = active ] || echo kiroku-recorder.service) \
                $(echo "$web" | grep -Eq '^web=200 .*setup=(done|already)' || echo kiroku-web.service); do
        journalctl -b -u "$unit" -n 40 -o cat --no-pager | while IFS= read -r line; do
            echo "journal $unit: $line" > /dev/kmsg
        done
    done
    say "mounted=yes boots=$n label=$label cipher=$cipher tail=$tail owner=$owner recorder=$recorder" \
        "$web webuser=$webuser banner=${banner:-none} calls=$calls failed=${failed:-none}" \
        "root=$root leftover=$leftover bannerwarns=${bannerwarns:-none} updates=${updates:-none}" \
        "outcomes=${outcomes:-none} venv=$venv after=$after os=${os:-none} osupdate=${osupdate:-none}" \
        "osreboot=${osreboot:-none}"
else
    say "mounted=no"
fi
systemctl --no-block poweroff
"""

# What the two scripts below share: a browser for the web UI's self-signed HTTPS, with cookies.
BROWSER = """import re, ssl, sys, time, urllib.error, urllib.parse, urllib.request

BASE = "https://127.0.0.1"
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
browser = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                      urllib.request.HTTPCookieProcessor())
"""

WEB = """# Boot test only: the web UI's answer on https://127.0.0.1/, its certificate's SHA-256, and
# the first-run page as the city's IT staff meet it: the first manager is made (Argon2id, the
# device's keys, CSRF, the recorder asked over its control socket) and the recovery key shown.
import hashlib
""" + BROWSER + """

def get(path):
    try:
        with browser.open(BASE + path, timeout=120) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


def greeting_code():
    try:
        with open("/run/issue.d/50-kiroku.issue", encoding="utf-8") as f:
            return re.search(r"set-up code: (\\S+)", f.read())
    except OSError:
        return None


deadline, error = time.monotonic() + 300, "none"
result = "web=none cert=none setup=none consolecode=none codeafter=none"
while time.monotonic() < deadline:
    try:
        status, page = get("/")
    except OSError as e:
        error = type(getattr(e, "reason", e)).__name__
        time.sleep(2)
        continue
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", 443)))
    japanese = "yes" if 'lang="ja"' in page else "no"
    setup, after = "already", "none"
    # the set-up code, read off the console's greeting as the person at the device reads it
    code = greeting_code()
    form_status, form = get("/setup/")
    if form_status == 200:
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        fields = {"csrf_token": token[1] if token else "", "code": code[1] if code else "", "username": "kanri",
                  "display_name": "管理 太郎", "section": "資産経営課", "password": "boot test passphrase",
                  "confirm": "boot test passphrase"}
        request = urllib.request.Request(BASE + "/setup/", urllib.parse.urlencode(fields).encode(),
                                         headers={"Referer": BASE + "/setup/"})
        try:
            with browser.open(request, timeout=300) as r:
                shown = "AGE-SECRET-KEY-" in r.read().decode(errors="replace")
            setup = "done" if shown else "no-recovery-key"
            # the code is used up: the greeting is drawn again without it (kiroku-banner.path;
            # two Python start-ups under software emulation)
            since = time.monotonic()
            while greeting_code() and time.monotonic() < since + 180:
                time.sleep(1)
            after = "shown" if greeting_code() else "gone"
            print(f"journal greeting: the set-up code {after} after {time.monotonic() - since:.0f} s",
                  file=sys.stderr)
            # the new manager's first look round: the web UI reads the recorder's vault
            storage_status, storage = get("/admin/storage/")
            if storage_status != 200 or 'aria-label="footage"' not in storage:
                setup = f"storage-page-{storage_status}"
                print("journal storage page:", " ".join(re.sub(r"<[^>]+>", " ", storage).split())[-600:],
                      file=sys.stderr)
        except urllib.error.HTTPError as e:
            setup = f"refused-{e.code}"
            detail = re.sub(r"<[^>]+>", " ", e.read().decode(errors="replace"))
            print("journal first-run page:", " ".join(detail.split())[-600:], file=sys.stderr)
    elif form_status != 404:
        setup = f"setup-page-{form_status}"
    result = (f"web={status} japanese={japanese} cert={hashlib.sha256(der).hexdigest()} setup={setup}"
              f" consolecode={'yes' if code else 'no'} codeafter={after}")
    break
print(f"{result} weberror={error}")
"""

UPLOAD = """# Boot test only: upload a release on the admin page as the manager boot 1 made, as a person
# would (log in, the form and its CSRF token, over HTTPS), then follow it through the API to
# its outcome while kiroku-update restarts the web UI under it. Prints the outcome's state;
# what kiroku-update said goes to stderr, a line at a time.
import json, uuid
""" + BROWSER + """

def fetch(path, body=None, headers=None, timeout=120):
    request = urllib.request.Request(BASE + path, body, headers={"Referer": BASE + path, **(headers or {})})
    with browser.open(request, timeout=timeout) as r:
        return r.read().decode(errors="replace")


def token(path):
    return re.search(r'name="csrf_token" value="([^"]+)"', fetch(path))[1]


path = sys.argv[1]
fetch("/login", urllib.parse.urlencode({"csrf_token": token("/login"), "username": "kanri",
                                         "password": "boot test passphrase"}).encode())
with open(path, "rb") as f:
    data = f.read()
boundary = uuid.uuid4().hex
body = (f'--{boundary}\\r\\nContent-Disposition: form-data; name="csrf_token"\\r\\n\\r\\n{token("/admin/update/")}\\r\\n'
        f'--{boundary}\\r\\nContent-Disposition: form-data; name="release"; filename="{path.rsplit("/", 1)[-1]}"\\r\\n'
        "Content-Type: application/x-tar\\r\\n\\r\\n").encode() + data + f"\\r\\n--{boundary}--\\r\\n".encode()
shown = fetch("/admin/update/", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=300)
if 'id="update-in-progress"' not in shown:
    print("journal update page:", " ".join(re.sub(r"<[^>]+>", " ", shown).split())[-600:], file=sys.stderr)
item, deadline = {}, time.monotonic() + 1500
while time.monotonic() < deadline:
    try:
        item = json.loads(fetch("/api/v1/update"))["updates"][0]
        if item["state"] in ("installed", "not-installed"):
            break
    except Exception:  # the web UI restarting with the update: refused, reset, cut short
        pass
    time.sleep(3)
for line in item.get("output", "").splitlines():
    print(f"update {path.rsplit('/', 1)[-1]}: {line}", file=sys.stderr)
print(item.get("state", "none"))
"""

# A first boot that formats a large card takes minutes; here the card is small, so the test holds
# provisioning back for as long as the kernel command line says (kiroku_boottest_slow_provision=S),
# longer than crypttab's 120 s wait for the partition: the data partition must still be mounted.
SLOW_PROVISION = 150
SLOW = """#!/bin/sh
for word in $(cat /proc/cmdline); do
    case "$word" in
        kiroku_boottest_slow_provision=*)
            echo "boot test: provisioning held back ${word#*=} s, as on a large card"
            sleep "${word#*=}" ;;
    esac
done
"""

UNIT = """[Unit]
Description=kiroku boot test: report the data partition and the services, then power off
After=var-lib-kiroku.mount kiroku-provision.service systemd-cryptsetup@kiroku\\x2ddata.service
After=kiroku-recorder.service kiroku-web.service kiroku-banner.service kiroku-call-recorder.service
Wants=var-lib-kiroku.mount

[Service]
Type=oneshot
ExecStart=/usr/lib/kiroku-boottest/report

[Install]
WantedBy=multi-user.target
"""


def log(message: str) -> None:
    print(f"boottest: {message}", flush=True)


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


# -- the disk --------------------------------------------------------------------------------

def rootfs(work: Path, packages: list[str] = PACKAGES) -> Path:
    """The Debian root file system (a folder), made once per package list."""
    digest = hashlib.sha256(" ".join([SUITE, *packages]).encode()).hexdigest()[:12]
    cached = work / f"rootfs-{SUITE}-{digest}"
    # The boot test and the stack test (stack.py) may run at once (make test runs them side by
    # side): whichever comes second waits for a file system the first is making, never makes it too.
    with open(work / f"{cached.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.exists():
            log(f"mmdebstrap {SUITE} (once; cached as {cached.name})")
            began = time.monotonic()
            partial = work / f"{cached.name}.partial"
            if partial.exists():
                shutil.rmtree(partial)
            run("mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(packages)}", "--format=directory",
                SUITE, partial, MIRROR)
            partial.rename(cached)
            log(f"mmdebstrap took {time.monotonic() - began:.0f} s")
    return cached


def assemble(work: Path, base: Path) -> tuple[Path, Path, Path]:
    """The pristine disk (boot + root, no data partition), the kernel and the initrd."""
    root = work / "root"
    if root.exists():
        shutil.rmtree(root)
    run("cp", "-a", base, root)
    install_firmware(root)
    make_releases(work, root)
    key = root / "etc/kiroku/boottest.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    conf = root / "etc/kiroku/image.conf"
    text = conf.read_text()
    assert re.search(r"^KEY_SOURCE=otp$", text, re.M), "image.conf's key source changed: update the boot test"
    conf.write_text(re.sub(r"^KEY_SOURCE=otp$", "KEY_SOURCE=file:/etc/kiroku/boottest.key", text, flags=re.M))
    (root / "usr/lib/kiroku-boottest").mkdir(parents=True, exist_ok=True)
    report = root / "usr/lib/kiroku-boottest/report"
    report.write_text(REPORT)
    report.chmod(0o755)
    (root / "usr/lib/kiroku-boottest/web").write_text(WEB)
    (root / "usr/lib/kiroku-boottest/upload").write_text(UPLOAD)
    slow = root / "usr/lib/kiroku-boottest/slow-provision"
    slow.write_text(SLOW)
    slow.chmod(0o755)
    dropin = root / "etc/systemd/system/kiroku-provision.service.d"
    dropin.mkdir(parents=True)
    (dropin / "boottest.conf").write_text(f"[Service]\nExecStartPre=/{slow.relative_to(root).as_posix()}\n")
    (root / "etc/systemd/system/kiroku-boottest.service").write_text(UNIT)
    # The one change to the image's units: qemu has no camera, so the recorder runs --simulate
    # (the firmware's simulated camera, microphone and pins) instead of --real; the rest of its
    # unit — user, groups, sandbox, Type=notify, watchdog — is the image's.
    dropin = root / "etc/systemd/system/kiroku-recorder.service.d"
    dropin.mkdir(parents=True)
    unit = (OVERLAY / "etc/systemd/system/kiroku-recorder.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*) --real (.*)$", unit, re.M)
    assert exec_start, "the recorder's ExecStart no longer says --real: update the boot test"
    simulated = f"{exec_start[1]} --simulate {exec_start[2]}"
    (dropin / "boottest.conf").write_text(f"[Service]\nExecStart=\nExecStart={simulated}\n")
    # and the updater's wait for READY=1 made longer: an emulated CPU starts Python slowly; the
    # restart after an OS update later than the report's look at it (which then stops it)
    dropin = root / "etc/systemd/system/kiroku-update-request.service.d"
    dropin.mkdir(parents=True)
    (dropin / "boottest.conf").write_text(
        f'[Service]\nEnvironment=KIROKU_READY_TIMEOUT=150 KIROKU_REBOOT_DELAY=900 "KIROKU_VENV_IMPORTS={VENV_IMPORTS}"\n')
    # The test's reporter (install-firmware enabled the image's nine units).
    run("systemctl", f"--root={root}", "--quiet", "enable", "kiroku-boottest.service", stderr=subprocess.DEVNULL)
    # Nobody logs in to the test machine; a getty on the console only adds a hang-up to race.
    run("systemctl", f"--root={root}", "--quiet", "mask", "serial-getty@ttyS0.service", stderr=subprocess.DEVNULL)
    (root / "etc/hostname").write_text("kiroku-boottest\n")
    kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    initrd = sorted((root / "boot").glob("initrd.img-*"))[-1]
    shutil.copy(kernel, work / "vmlinuz")
    shutil.copy(initrd, work / "initrd.img")

    root_img = work / "root.img"
    root_img.unlink(missing_ok=True)
    run("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", root, root_img, ROOT_SIZE, stdout=subprocess.DEVNULL)
    root_sectors = root_img.stat().st_size // SECTOR
    root_start = BOOT_START + BOOT_SECTORS
    disk = work / "pristine.img"
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as f:
        f.truncate(DISK_BYTES)
    table = f"label: dos\n{BOOT_START},{BOOT_SECTORS},c\n{root_start},{root_sectors},83\n"
    run("sfdisk", "--quiet", disk, input=table.encode())
    run("dd", f"if={root_img}", f"of={disk}", f"bs={SECTOR}", f"seek={root_start}", "conv=notrunc,sparse",
        "status=none")
    root_img.unlink()
    shutil.rmtree(root)
    return disk, work / "vmlinuz", work / "initrd.img"


def copy_checkout(dst: Path) -> None:
    """This checkout's files (committed or not, less what git ignores) into dst."""
    files = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)


PIP = f"{REPO / '.venv/bin/python' if (REPO / '.venv/bin/python').exists() else sys.executable} -m pip"


def install_firmware(root: Path) -> None:
    """The firmware as the image installs it: this checkout's files in /opt/kiroku/src, then the
    image's own install-firmware (overlay, venv-VERSION made by install-venv inside the root file
    system from apt's stack plus the lock's wheels, hashes checked, fetched here by the release
    tool so the chroot needs no network; users; the nine units enabled). Then /etc/fstab is
    written afresh, as the image's build does after our layer (rpi-image-gen's setup.sh), so
    nothing the appliance needs may live there."""
    src = root / "opt/kiroku/src"
    copy_checkout(src)
    wheels = root / "tmp/wheels"
    run(IMAGE_BUILD / "release", "wheels", IMAGE_BUILD / "requirements.lock", wheels, env={**os.environ, "PIP": PIP})
    with tempfile.TemporaryDirectory() as pi_archive:
        run(IMAGE_BUILD / "release", "wheels", PI_ARCHIVE_LOCK, pi_archive, env={**os.environ, "PIP": PIP})
        run(*PIP.split(), "install", "--quiet", "--no-deps", "--no-compile", "--no-index", "--find-links",
            pi_archive, "--require-hashes", "-r", PI_ARCHIVE_LOCK,
            "--target", root / "usr/local/lib/python3.13/dist-packages")
    commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty", "--abbrev=40"], check=True,
                            capture_output=True, text=True).stdout.strip()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": "/tmp/wheels", "PIP_CONFIG_FILE": "/dev/null", "KIROKU_VENV_IMPORTS": VENV_IMPORTS}
    run(src / "image-build/install-firmware", root, commit, env=env, stdout=subprocess.DEVNULL)
    shutil.rmtree(wheels)
    (root / "etc/fstab").write_text("# written afresh after install-firmware, as the image's build does\n")


def newer(version: str, step: int) -> str:
    return f"{version}.{step}"


OS_UPDATE = "2026.1.1"  # the OS update's version: a package of the test's own, kiroku-boottest-probe


def make_probe(out: Path) -> Path:
    """A Debian package for the OS update (dpkg-deb), needing one the image has (libc6)."""
    tree = out / "probe"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share/kiroku-boottest-probe").mkdir(parents=True)
    (tree / "usr/share/kiroku-boottest-probe/installed").write_text("by kiroku-update, from a signed OS update\n")
    (tree / "DEBIAN/control").write_text(
        "Package: kiroku-boottest-probe\nVersion: 1.0-1\nArchitecture: all\nDepends: libc6\n"
        "Maintainer: boottest <boottest@kiroku.invalid>\nDescription: boot test: an OS update's package\n")
    deb = out / "kiroku-boottest-probe_1.0-1_all.deb"
    run("dpkg-deb", "--root-owner-group", "--build", tree, deb, stdout=subprocess.DEVNULL)
    shutil.rmtree(tree)
    return deb


def make_releases(work: Path, root: Path) -> None:
    """Two signed releases of this checkout for kiroku-update, made by the release tool with a
    release key of the test's own (its public half in the image, as build-image puts the
    project's): a good one, one version newer, and a broken one after it whose services never
    start; and an OS update of one package. They wait in /usr/lib/kiroku-boottest/releases for
    the boot that installs them."""
    keys = work / "release-key"
    shutil.rmtree(keys, ignore_errors=True)
    keys.mkdir(mode=0o700)
    run("openssl", "genpkey", "-algorithm", "ed25519", "-out", keys / "release.pem")
    run("openssl", "pkey", "-in", keys / "release.pem", "-pubout", "-out", root / "etc/kiroku/release-key.pub")
    out = root / "usr/lib/kiroku-boottest/releases"
    version = checkout_version()
    identity = {"GIT_AUTHOR_NAME": "boottest", "GIT_AUTHOR_EMAIL": "boottest@kiroku.invalid",
                "GIT_COMMITTER_NAME": "boottest", "GIT_COMMITTER_EMAIL": "boottest@kiroku.invalid"}
    for step, broken in ((1, False), (2, True)):
        checkout = work / f"release-{step}"
        shutil.rmtree(checkout, ignore_errors=True)
        copy_checkout(checkout)
        # the image's public key is this key's, as release checks (once the project's is committed)
        shutil.copy(root / "etc/kiroku/release-key.pub", checkout / "image-build/overlay/etc/kiroku/release-key.pub")
        pyproject = checkout / "pyproject.toml"
        pyproject.write_text(re.sub(r'^version = ".*"$', f'version = "{newer(version, step)}"',
                                    pyproject.read_text(), count=1, flags=re.M))
        if broken:
            with open(checkout / "firmware/__init__.py", "a") as f:
                f.write('\nraise SystemExit("boot test: this release is broken on purpose")\n')
        env = {**os.environ, **identity}
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", f"boot test release {step}"]):
            run("git", "-C", checkout, *args, env=env)
        run(IMAGE_BUILD / "release", "--key", keys / "release.pem", "--out", out, "--repo", checkout,
            env={**os.environ, "PIP": PIP}, stdout=subprocess.DEVNULL)
        if not broken:
            run(IMAGE_BUILD / "release", "os", "--key", keys / "release.pem", "--out", out, "--version", OS_UPDATE,
                "--repo", checkout, make_probe(work), stdout=subprocess.DEVNULL)
        shutil.rmtree(checkout)
    shutil.rmtree(keys)


def checkout_version() -> str:
    """The version the image's venv gets (install-firmware reads the same line)."""
    return re.search(r'^version *= *"([0-9.]+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]


def copy_disk(src: Path, dst: Path) -> Path:
    run("cp", "--sparse=always", src, dst)
    return dst


def reflash(disk: Path, pristine: Path) -> None:
    """Flashing the image again writes its partition table: the first sector, without
    partition 3. Raspberry Pi Imager also zeroes the card's last MiB first."""
    with open(pristine, "rb") as f:
        mbr = f.read(SECTOR)
    with open(disk, "r+b") as f:
        f.seek(-MIB, os.SEEK_END)
        f.write(bytes(MIB))
        f.seek(0)
        f.write(mbr)


# -- booting ---------------------------------------------------------------------------------

# -- the accelerator ---------------------------------------------------------------------------

# The two CPUs the boots stand in for: qemu64 has no AES instructions, like a Pi 4's; "max" has
# them, like a Pi 5's (under KVM, "max" is this machine's CPU: it has them only if this one does).
PI4_CPU, PI5_CPU = "qemu64", "max"
KVM_PROBE_TIMEOUT = 20  # seconds; under KVM the probe's kernel is done in one or two


def kvm_boots(kernel: Path, cpu: str) -> str | None:
    """None if qemu boots Debian's kernel under KVM here with this CPU, else why not. A /dev/kvm
    that opens proves little: nested in some VMs (e.g. a PVM host's) a stock kernel hangs or
    stops on an emulation failure. So the kernel is booted, without a disk, up to its panic for
    want of a root file system, which it reaches only if everything before ran."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no /dev/kvm"
    if cpu == PI5_CPU and not re.search(r"^flags\s*:.*\baes\b", Path("/proc/cpuinfo").read_text(), re.M):
        return "this CPU has no AES instructions for the Pi 5's boots"
    proc = subprocess.Popen(["qemu-system-x86_64", "-accel", "kvm", "-cpu", cpu, "-m", "512", "-smp", "1",
                             "-nographic", "-no-reboot", "-nic", "none", "-kernel", str(kernel),
                             "-append", "console=ttyS0 panic=-1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timer = threading.Timer(KVM_PROBE_TIMEOUT, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read().decode(errors="replace")
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
    if "Unable to mount root fs" in out:
        return None
    last = [line for line in out.replace("\r", "\n").splitlines() if line.strip()][-1:] or ["nothing"]
    return (f"Debian's kernel did not boot under KVM within {KVM_PROBE_TIMEOUT} s (qemu's last words: "
            f"{last[0].strip()[:120]!r})")


def choose_accelerators(kernel: Path) -> dict[str, str]:
    """KVM for each CPU whose probe boots, software emulation (TCG) for the rest; said in the log."""
    chosen = {}
    for cpu, board in ((PI4_CPU, "Pi 4"), (PI5_CPU, "Pi 5")):
        why_not = kvm_boots(kernel, cpu)
        chosen[cpu] = "tcg" if why_not else "kvm"
        log(f"qemu for the {board}'s boots (-cpu {cpu}): " +
            (f"TCG, software emulation ({why_not})" if why_not else "KVM"))
    return chosen


# -- booting ---------------------------------------------------------------------------------

class Boot:
    """One boot of the disk in qemu, its serial console collected line by line."""

    # The emulated kernel, patching its own code at boot (int3 breakpoints, text_poke) on two
    # vCPUs, now and then trips over its own breakpoint under TCG and panics seconds in, before
    # anything of the image runs: an emulator race, not the image's fault. Such a boot is
    # started again (the log keeps both), at most this many times.
    EMULATOR_CRASH = re.compile(r"Oops: int3")
    RETRIES = 2
    # A guest kernel that panics later, once the image runs ("Kernel panic - not syncing: Fatal
    # exception in interrupt" in the allocator, seen once in many runs under TCG), is booted again
    # once: to the card it is a power cut, which the image must survive anyway. A second panic in
    # the same boot fails the test.
    KERNEL_PANIC = re.compile(r"Kernel panic - not syncing")
    PANIC_RETRIES = 1
    # After its report the machine powers itself off; a stop job that hangs (a device waiting to
    # disappear, a service that ignores SIGTERM) would keep it up for minutes, on the Pi at every
    # restart too. Seconds under emulation; this much is a hang.
    POWEROFF_TIMEOUT = 60
    # which accelerator each CPU boots with here (main() probes KVM once)
    accelerators = {PI4_CPU: "tcg", PI5_CPU: "tcg"}
    # the machines still running, killed if the test stops early
    running: set["Boot"] = set()

    def __init__(self, work: Path, disk: Path, name: str, *, aes: bool = False, append: str = ""):
        self.lines: list[str] = []
        self.name = name
        self.log = open(work / f"console-{name}.log", "w")
        cpu = PI5_CPU if aes else PI4_CPU
        self.accel = self.accelerators[cpu]
        self.log.write(f"=== boottest: qemu -accel {self.accel} -cpu {cpu} ===\n")
        self._cmd = ["qemu-system-x86_64", "-accel", self.accel, "-cpu", cpu, "-m", "2048", "-smp", "2", "-nographic",
                     "-no-reboot", "-nic", "none", "-kernel", str(work / "vmlinuz"),
                     "-initrd", str(work / "initrd.img"),
                     "-append", "root=/dev/vda2 rw console=ttyS0 panic=-1 printk.devkmsg=on systemd.firstboot=off "
                                f"systemd.show_status=0 {append}".strip(),
                     "-drive", f"file={disk},format=raw,if=virtio"]
        self._changed = threading.Condition()
        self._retries = self._panics = 0
        self.started = time.monotonic()
        Boot.running.add(self)
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc) -> None:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.log.write(line + "\n")
            self.log.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _boot_again_after_emulator_crash(self) -> bool:
        """Called with the lock held, once the machine stopped: start it again if the emulated
        kernel crashed on its own breakpoint (EMULATOR_CRASH) or panicked (KERNEL_PANIC)."""
        if self.accel != "tcg":
            return False
        crash = next((i for i, line in enumerate(self.lines) if self.EMULATOR_CRASH.search(line)), None)
        if crash is not None and not any("Run /init as init process" in line for line in self.lines[:crash]):
            if self._retries >= self.RETRIES:
                return False
            self._retries += 1
            why, count = "crashed on its own breakpoint (a TCG race, before the image ran)", \
                f"{self._retries}/{self.RETRIES}"
        else:
            panic = next((line for line in self.lines if self.KERNEL_PANIC.search(line)), None)
            if panic is None or self._panics >= self.PANIC_RETRIES:
                return False  # not the emulator's fault, or not for the first time: the test's to judge
            self._panics += 1
            why, count = f"panicked ({panic.strip()}), to the card a power cut", f"{self._panics}/{self.PANIC_RETRIES}"
        log(f"   the emulated kernel {why}: booting again ({count}); see {self.log.name}")
        self.log.write(f"=== boottest: the emulated kernel {why}; booting again ({count}) ===\n")
        self.lines = []
        self._start()
        return True

    def wait_for(self, pattern: str, timeout: float = BOOT_TIMEOUT) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if m := regex.search(line):
                        return m
                seen = len(self.lines)
                if self.proc.poll() is not None and seen == len(self.lines):
                    while self._reader.is_alive():  # the stopped machine's last lines
                        self._changed.wait(0.1)
                    if len(self.lines) > seen:
                        continue
                    if self._boot_again_after_emulator_crash():
                        seen = 0
                        continue
                    raise AssertionError(f"the machine stopped before {pattern!r}; see {self.log.name}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout:.0f} s; see {self.log.name}")
                self._changed.wait(min(left, 1.0))

    def report(self, timeout: float = BOOT_TIMEOUT) -> dict:
        m = self.wait_for(r"KIROKU-BOOTTEST (.*)$", timeout)
        reported = time.monotonic()
        powered_off = self.finish(self.POWEROFF_TIMEOUT)
        log(f"   {self.name}: reported after {reported - self.started:.0f} s, "
            + (f"powered off {time.monotonic() - reported:.0f} s later" if powered_off else "did not power off"))
        assert powered_off, f"the machine did not power off within {self.POWEROFF_TIMEOUT} s of its report: " \
            f"a stop job hangs at shutdown (on the Pi at every restart too); see {self.log.name}"
        return dict(part.split("=", 1) for part in m.group(1).split())

    def cut_power(self) -> None:
        self.proc.kill()
        self.finish()
        log(f"   {self.name}: power cut after {time.monotonic() - self.started:.0f} s")

    def finish(self, timeout: float = 120) -> bool:
        """Wait for the machine to stop (killed after timeout); whether it stopped by itself."""
        try:
            self.proc.wait(timeout)
            stopped = True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            stopped = False
        self.log.close()
        Boot.running.discard(self)
        return stopped

    @classmethod
    def kill_all(cls) -> None:
        for boot in list(cls.running):
            boot.proc.kill()

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def expect(report: dict, boots: int, cipher: str) -> None:
    assert report.get("mounted") == "yes", f"the data partition was not mounted: {report}"
    assert report["boots"] == str(boots), f"expected boot {boots} on the data partition, saw {report['boots']}"
    assert report["label"] == "kiroku-data", report
    assert report["cipher"] == cipher, f"expected {cipher}, got {report['cipher']}"
    assert report["tail"].isdigit() and 4 <= int(report["tail"]) < 8, \
        f"the data partition ends {report['tail']} MiB before the card: " \
        "Raspberry Pi Imager's wipe of the last MiB would reach it"
    assert report["owner"] == "kiroku-rec:kiroku:2770", f"the data folder's owner and mode: {report['owner']}"
    # the services, started by their own units as on the Pi
    assert report["failed"] == "none", f"units failed: {report['failed']}; see the console log"
    assert report["recorder"] == "active", f"the recorder did not reach READY: {report}"
    assert report["web"] == "200" and report["japanese"] == "yes", f"the web UI did not serve its page: {report}"
    assert report["webuser"] == "kiroku-web", f"the web UI runs as {report['webuser']}, not kiroku-web"
    assert report["banner"] == report["cert"], f"the console banner names {report['banner']}, the web UI serves " \
        f"{report['cert']}"
    assert report["calls"] == "inactive", f"the call recorder ran on a counter device: {report['calls']}"
    # a new data partition offers the first-run page, once
    assert report["setup"] == ("done" if boots == 1 else "already"), f"the first-run page: {report['setup']}"
    # …with the set-up code the console shows until then, and only until then
    assert report["consolecode"] == ("yes" if boots == 1 else "no"), f"the console's set-up code: {report}"
    assert report["codeafter"] == ("gone" if boots == 1 else "none"), f"the greeting after the first run: {report}"
    # the read-only root: what the boot before wrote there is gone
    assert report["root"] == "overlay", f"the root is {report['root']}, not overlayroot's overlay"
    assert report["leftover"] == "no", "a file written to the root survived a reboot: the root is not read-only"
    assert report["bannerwarns"] == "0", f"the console banner warns: {report['bannerwarns']} warnings"
    assert report["after"] == "active,active", f"the recorder and the web UI after the updates: {report['after']}"


ADIANTUM, XTS = "xchacha12,aes-adiantum-plain64", "aes-xts-plain64"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=IMAGE_BUILD / "build" / "boottest")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("boottest: run as root (mmdebstrap, and mkfs.ext4 -d keeping owners)", file=sys.stderr)
        return 2
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # sfdisk, mkfs.ext4
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = rootfs(work)
    # Whether KVM boots here is found out while the disk is made (Debian's kernel, as booted below).
    with ThreadPoolExecutor(1) as probe:
        accelerators = probe.submit(choose_accelerators, sorted((base / "boot").glob("vmlinuz-*"))[-1])
        pristine, _, _ = assemble(work, base)
        Boot.accelerators = accelerators.result()
    log(f"the disk is made ({time.monotonic() - started:.0f} s)")

    # Disk a's boots follow one another (each finds what the one before left); the power cuts
    # (disks b and c) need only the pristine disk, so they run meanwhile, a machine of their own.
    with ThreadPoolExecutor(1) as beside:
        cuts = beside.submit(power_cuts, work, pristine)
        try:
            boots_in_turn(work, pristine)
            cuts.result()
        except BaseException as exc:
            Boot.kill_all()
            # the last line of the log, which the summary of `make test` shows
            log(f"FAILED after {time.monotonic() - started:.0f} s: {type(exc).__name__}: {exc}")
            raise

    log(f"all passed in {time.monotonic() - started:.0f} s")
    return 0


def boots_in_turn(work: Path, pristine: Path) -> None:
    """1 to 3: one card through its first boots, updates and a re-flash."""
    log("1. first boot provisions; the second finds it")
    disk = copy_disk(pristine, work / "disk-a.img")
    first = Boot(work, disk, "a1", append=f"kiroku_boottest_slow_provision={SLOW_PROVISION}")
    first_report = first.report(timeout=BOOT_TIMEOUT + SLOW_PROVISION + 180)  # + the greeting redrawn
    expect(first_report, 1, ADIANTUM)
    assert first.saw("kiroku provision-data: the data partition"), "the first boot did not provision"
    assert first.saw("provisioning held back"), "the first boot was not held back like a large card's"
    second = Boot(work, disk, "a2")
    report = second.report()
    expect(report, 2, ADIANTUM)
    assert not second.saw("formatting"), "the second boot formatted again"
    assert report["cert"] == first_report["cert"], "the web UI's certificate changed at a reboot"

    log("2. signed updates under the read-only root: one installed, a broken one rolled back")
    version = checkout_version()
    good, bad = newer(version, 1), newer(version, 2)
    update = Boot(work, disk, "a3", append=f"kiroku_boottest_update=kiroku-{good}.release.tar,kiroku-{bad}.release.tar,"
                                         f"kiroku-os-{OS_UPDATE}.os.tar")
    report = update.report(timeout=BOOT_TIMEOUT + 1200)  # three installs and a rollback, emulated
    expect(report, 3, ADIANTUM)
    assert report["updates"] == f"{good},{good},{good}", f"after each update the venv said {report['updates']}, " \
        f"not {good} and then {good} again (the broken {bad} rolled back, the OS update beside it); " \
        f"see {update.log.name}"
    assert report["venv"] == f"venv-{good}", report
    # all went through the admin page, the path unit and the root helper, which said how each ended
    assert report["outcomes"] == "installed,not-installed,installed", f"the admin page saw {report['outcomes']}; " \
        f"see {update.log.name}"
    # the OS update: its package installed by apt from the bundle, recorded, the restart arranged
    assert report["os"] == "1.0-1" and report["osupdate"] == OS_UPDATE, \
        f"the OS update: package {report['os']}, recorded {report['osupdate']}; see {update.log.name}"
    assert report["osreboot"] == "active", f"no restart was arranged after the OS update: {report['osreboot']}"
    assert update.saw(f"{good} is installed and running"), f"the good release did not install; see {update.log.name}"
    # its kiroku cannot even start, so systemd skips the recorder (the unit's ExecCondition): seen
    # as down for good at once (inactive, no job left), not after the timeout
    assert update.saw(f"{bad} is not working, its recorder stopped without starting"), \
        f"the broken release was not seen to stop; see {update.log.name}"
    # said only once the version gone back to is ready again
    assert update.saw(f"{bad} was not installed"), f"the broken release was not rolled back; see {update.log.name}"

    log("3. the next boot runs the update; a card flashed again keeps its footage")
    reflash(disk, pristine)
    again = Boot(work, disk, "a4")
    report = again.report()
    expect(report, 4, ADIANTUM)
    assert again.saw("found the finished data partition"), "the re-flashed card was not recognised"
    # (the test's "flashing" writes only the partition table, so the root is as the update left it)
    # what the update made last is in the lower layer: it survived the reboot, the broken one did not stay
    assert report["venv"] == f"venv-{good}", f"after a reboot the device runs {report['venv']}, not venv-{good}"
    assert report["os"] == "1.0-1" and report["osupdate"] == OS_UPDATE, \
        f"the OS update did not survive the reboot (it belongs in the lower layer): {report}"
    disk.unlink()
    log("1 to 3 passed")


def power_cuts(work: Path, pristine: Path) -> None:
    """4: power cuts while provisioning, each on a card of its own."""
    log("4. power cuts while provisioning")
    for name, marker, delay, aes in (("b", "adding partition", 0.0, False),
                                     ("c", "formatting", 2.0, True)):
        disk = copy_disk(pristine, work / f"disk-{name}.img")
        cut = Boot(work, disk, f"{name}1-cut", aes=aes)
        cut.wait_for(marker)
        time.sleep(delay)
        cut.cut_power()
        log(f"   cut after {marker!r} (+{delay:g} s)")
        # (under emulation formatting takes far longer than the delay; should a faster machine
        # finish it first, this says so rather than pass without having cut anything short)
        assert not cut.saw("kiroku provision-data: the data partition"), \
            f"provisioning finished before the power cut {delay:g} s after {marker!r}: cut sooner; see {cut.log.name}"
        expect(Boot(work, disk, f"{name}2", aes=aes).report(), 1, XTS if aes else ADIANTUM)
        (work / f"disk-{name}.img").unlink()
    log("4 passed")


if __name__ == "__main__":
    sys.exit(main())
