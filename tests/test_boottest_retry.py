"""The boot test's judgement of a machine that stopped: an emulated kernel that crashes or panics
on its own is booted again (and the log says so), the image's own failures are not.

A stand-in qemu-system-x86_64 plays the console lines each boot would print, in turn."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REPORT = "KIROKU-BOOTTEST mounted=yes boots=2"


@pytest.fixture
def boot(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("boottest_run", REPO / "image-build/boottest/run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    run.Boot.accelerators = {cpu: "tcg" for cpu in run.Boot.accelerators}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-system-x86_64"
    # each start prints the next file's lines, then stops as a machine with -no-reboot does
    qemu.write_text('#!/bin/sh\nn=$(cat "$BOOTS/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$BOOTS/count"\n'
                    '[ -f "$BOOTS/$n" ] && cat "$BOOTS/$n"\nexit 0\n')
    qemu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("BOOTS", str(tmp_path))

    def boot_with(*consoles: str):
        for i, text in enumerate(consoles, 1):
            (tmp_path / str(i)).write_text(text)
        return run.Boot(tmp_path, tmp_path / "disk.img", "a2")

    boot_with.starts = lambda: int((tmp_path / "count").read_text())
    return boot_with


def test_a_guest_kernel_panic_after_the_image_started_is_booted_again_once(boot, capsys):
    panicked = "Run /init as init process\nkiroku: mounting\nKernel panic - not syncing: Fatal exception in interrupt\n"
    machine = boot(panicked, f"Run /init as init process\n{REPORT}\n")
    assert machine.report()["boots"] == "2"
    assert boot.starts() == 2
    said = capsys.readouterr().out
    assert "panicked (Kernel panic - not syncing: Fatal exception in interrupt)" in said and "(1/1)" in said
    console = Path(machine.log.name).read_text()
    assert "kiroku: mounting" in console and "booting again (1/1)" in console, "the log keeps both boots"


def test_a_second_panic_in_the_same_boot_fails_the_test(boot):
    panicked = "Run /init as init process\nKernel panic - not syncing: Fatal exception\n"
    machine = boot(panicked, panicked, f"{REPORT}\n")
    with pytest.raises(AssertionError, match="the machine stopped before"):
        machine.report()
    assert boot.starts() == 2


def test_a_machine_that_stops_without_a_panic_is_not_booted_again(boot):
    machine = boot("Run /init as init process\nkiroku-provision: formatting failed\n", f"{REPORT}\n")
    with pytest.raises(AssertionError, match="the machine stopped before"):
        machine.report()
    assert boot.starts() == 1


def test_the_breakpoint_race_before_the_image_runs_is_booted_again_up_to_twice(boot):
    race = "Linux version 6.12\nOops: int3: 0000 [#1] SMP\n"
    machine = boot(race, race, f"Run /init as init process\n{REPORT}\n")
    assert machine.report()["mounted"] == "yes"
    assert boot.starts() == 3
