#!/usr/bin/env python3
"""The full-boot test of the image's overlay, without a Pi.

A Debian trixie root file system (mmdebstrap) gets the same overlay the image gets —
units, crypttab, fstab line, first-boot scripts — with ``KEY_SOURCE=file:`` standing in
for the Pi's firmware. It is written to a disk image without loop devices (``mkfs.ext4
-d``, ``sfdisk``, a copy at the partition's offset) laid out like the Pi's card (a boot
partition, then root), and booted with Debian's kernel in qemu under software
emulation. A small test unit reports, on the serial console, whether the data partition
is mounted and how many boots it has seen, then powers off. Then:

  1. first boot provisions (Adiantum: the emulated CPU has no AES instructions, like a
     Pi 4), the second finds the partition and the first boot's data;
  2. a power cut (qemu killed) right after the partition is added, and one in the middle
     of formatting (with AES instructions, like a Pi 5): each next boot finishes the
     partition and mounts it (that data survives boots is shown by 1 and 3);
  3. the card "flashed again" (the image's partition table, without partition 3) finds
     its finished partition again, data and all.

Usage: run.py [--work DIR]    (as root; needs mmdebstrap, qemu-system-x86, e2fsprogs, fdisk)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE_BUILD = HERE.parent
OVERLAY = IMAGE_BUILD / "overlay"
PACKAGES = ["linux-image-amd64", "systemd-sysv", "udev", "kmod", "cryptsetup-bin", "systemd-cryptsetup",
            "e2fsprogs", "fdisk", "util-linux"]
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
SECTOR = 512
BOOT_START, BOOT_SECTORS = 8192, 256 * 2048  # a 256 MiB boot partition, as on the Pi's card
DISK_BYTES = 8 * 2**30
BOOT_TIMEOUT = 600  # seconds: software emulation is slow, and a first boot formats

REPORT = """#!/bin/sh
# Boot test only: say what this boot found, keep count on the data partition, power off.
# The line goes through the kernel's log, which the kernel prints on the serial console
# whoever holds the tty: written to the tty itself, it raced agetty's hang-up of that tty.
say() { echo "KIROKU-BOOTTEST $*" > /dev/kmsg; }
if mountpoint -q /var/lib/kiroku; then
    n=$(( $(cat /var/lib/kiroku/boots 2>/dev/null || echo 0) + 1 ))
    echo "$n" > /var/lib/kiroku/boots
    sync
    part=$(cryptsetup status kiroku-data | awk '$1 == "device:" { print $2 }')
    label=$(blkid -p -s LABEL -o value "$part")
    cipher=$(cryptsetup luksDump "$part" | awk '$1 == "cipher:" { print $2; exit }')
    owner=$(stat -c %U:%G:%a /var/lib/kiroku)
    say "mounted=yes boots=$n label=$label cipher=$cipher owner=$owner"
else
    say "mounted=no"
fi
systemctl --no-block poweroff
"""

UNIT = """[Unit]
Description=kiroku boot test: report the data partition, then power off
After=var-lib-kiroku.mount kiroku-provision.service systemd-cryptsetup@kiroku\\x2ddata.service
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

def rootfs(work: Path) -> Path:
    """The Debian root file system (a folder), made once per package list."""
    digest = hashlib.sha256(" ".join([SUITE, *PACKAGES]).encode()).hexdigest()[:12]
    cached = work / f"rootfs-{SUITE}-{digest}"
    if not cached.exists():
        log(f"mmdebstrap {SUITE} (once; cached as {cached.name})")
        partial = work / f"{cached.name}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        run("mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}", "--format=directory",
            SUITE, partial, MIRROR)
        partial.rename(cached)
    return cached


def assemble(work: Path, base: Path) -> tuple[Path, Path, Path]:
    """The pristine disk (boot + root, no data partition), the kernel and the initrd."""
    root = work / "root"
    if root.exists():
        shutil.rmtree(root)
    run("cp", "-a", base, root)
    shutil.copytree(OVERLAY, root, dirs_exist_ok=True, symlinks=True)
    with open(root / "etc/fstab", "a") as fstab:
        fstab.write((OVERLAY / "etc/kiroku/fstab.append").read_text())
    key = root / "etc/kiroku/boottest.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    conf = root / "etc/kiroku/image.conf"
    text = conf.read_text()
    assert re.search(r"^KEY_SOURCE=otp$", text, re.M), "image.conf's key source changed: update the boot test"
    conf.write_text(re.sub(r"^KEY_SOURCE=otp$", "KEY_SOURCE=file:/etc/kiroku/boottest.key", text, flags=re.M))
    (root / "usr/lib/kiroku-boottest").mkdir(parents=True)
    report = root / "usr/lib/kiroku-boottest/report"
    report.write_text(REPORT)
    report.chmod(0o755)
    (root / "etc/systemd/system/kiroku-boottest.service").write_text(UNIT)
    # What the image enables, less the two services that need the venv (not in this rootfs).
    run("systemctl", f"--root={root}", "--quiet", "enable", "kiroku-datakey.service", "kiroku-provision.service",
        "kiroku-boottest.service", stderr=subprocess.DEVNULL)
    # Nobody logs in to the test machine; a getty on the console only adds a hang-up to race.
    run("systemctl", f"--root={root}", "--quiet", "mask", "serial-getty@ttyS0.service", stderr=subprocess.DEVNULL)
    (root / "etc/hostname").write_text("kiroku-boottest\n")
    kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    initrd = sorted((root / "boot").glob("initrd.img-*"))[-1]
    shutil.copy(kernel, work / "vmlinuz")
    shutil.copy(initrd, work / "initrd.img")

    root_img = work / "root.img"
    root_img.unlink(missing_ok=True)
    run("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", root, root_img, "2G", stdout=subprocess.DEVNULL)
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


def copy_disk(src: Path, dst: Path) -> Path:
    run("cp", "--sparse=always", src, dst)
    return dst


def reflash(disk: Path, pristine: Path) -> None:
    """Flashing the image again writes its partition table: the first sector, without partition 3."""
    with open(pristine, "rb") as f:
        mbr = f.read(SECTOR)
    with open(disk, "r+b") as f:
        f.write(mbr)


# -- booting ---------------------------------------------------------------------------------

class Boot:
    """One boot of the disk in qemu, its serial console collected line by line."""

    def __init__(self, work: Path, disk: Path, name: str, *, aes: bool = False):
        self.lines: list[str] = []
        self.log = open(work / f"console-{name}.log", "w")
        cpu = "max" if aes else "qemu64"  # qemu64 has no AES instructions, like a Pi 4's CPU
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-cpu", cpu, "-m", "1024", "-smp", "2", "-nographic",
             "-no-reboot", "-nic", "none", "-kernel", str(work / "vmlinuz"), "-initrd", str(work / "initrd.img"),
             "-append", "root=/dev/vda2 rw console=ttyS0 panic=-1 systemd.firstboot=off systemd.show_status=0",
             "-drive", f"file={disk},format=raw,if=virtio"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.log.write(line + "\n")
            self.log.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

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
                    raise AssertionError(f"the machine stopped before {pattern!r}; see {self.log.name}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout:.0f} s; see {self.log.name}")
                self._changed.wait(min(left, 1.0))

    def report(self) -> dict:
        m = self.wait_for(r"KIROKU-BOOTTEST (.*)$")
        self.finish()
        return dict(part.split("=", 1) for part in m.group(1).split())

    def cut_power(self) -> None:
        self.proc.kill()
        self.finish()

    def finish(self) -> None:
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def expect(report: dict, boots: int, cipher: str) -> None:
    assert report.get("mounted") == "yes", f"the data partition was not mounted: {report}"
    assert report["boots"] == str(boots), f"expected boot {boots} on the data partition, saw {report['boots']}"
    assert report["label"] == "kiroku-data", report
    assert report["cipher"] == cipher, f"expected {cipher}, got {report['cipher']}"
    assert report["owner"] == "kiroku-rec:kiroku:2770", f"the data folder's owner and mode: {report['owner']}"


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
    pristine, _, _ = assemble(work, rootfs(work))

    log("1. first boot provisions; the second finds it")
    disk = copy_disk(pristine, work / "disk-a.img")
    first = Boot(work, disk, "a1")
    expect(first.report(), 1, ADIANTUM)
    assert first.saw("kiroku provision-data: the data partition"), "the first boot did not provision"
    second = Boot(work, disk, "a2")
    expect(second.report(), 2, ADIANTUM)
    assert not second.saw("formatting"), "the second boot formatted again"

    log("2. power cuts while provisioning")
    for name, marker, delay, aes in (("b", "adding partition", 0.0, False),
                                     ("c", "formatting", 2.0, True)):
        disk = copy_disk(pristine, work / f"disk-{name}.img")
        cut = Boot(work, disk, f"{name}1-cut", aes=aes)
        cut.wait_for(marker)
        time.sleep(delay)
        cut.cut_power()
        log(f"   cut after {marker!r} (+{delay:g} s)")
        expect(Boot(work, disk, f"{name}2", aes=aes).report(), 1, XTS if aes else ADIANTUM)
        (work / f"disk-{name}.img").unlink()

    log("3. a card flashed again keeps its footage")
    disk = work / "disk-a.img"
    reflash(disk, pristine)
    again = Boot(work, disk, "a3")
    expect(again.report(), 3, ADIANTUM)
    assert again.saw("found the finished data partition"), "the re-flashed card was not recognised"
    disk.unlink()

    log(f"all passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
