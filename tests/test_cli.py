"""The ``kiroku`` command as an operator meets it: flags where the README writes them, one line
(not a traceback) for what the operator can fix, read-only commands on a read-only copy."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from kiroku import cli
from kiroku.cli.parser import build_parser
from tests.conftest import set_up

ROOT = Path(__file__).resolve().parent.parent


def _documented_command_lines() -> list[str]:
    """Every ``kiroku …`` line in a code block of README.md and docs/*.md (a shell prompt's lines)."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        in_block = False
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                in_block = not in_block
                continue
            text = re.sub(r"^\s*(sudo -u \S+ )?(\S*/)?(?=kiroku )", "", line.split("  #")[0]).strip()
            if in_block and re.match(r"kiroku [a-z]", text) and not text.endswith("\\"):
                found.append(text.split(">")[0].strip())
    return found


# The README's table of commands, each alternative written out (`a|b` is two lines, `[--x]` given).
README_TABLE = [
    "kiroku run --simulate --data DIR --port 8080", "kiroku run --real --data DIR",
    "kiroku recorder --data DIR", "kiroku web --data DIR --port 8080",
    "kiroku init --data DIR --recovery-key-out FILE --recovery-qr-out F.svg --manager NAME --password-file FILE"
    " --display-name N --section S",
    *(f"kiroku ctl --data DIR {a} --json" for a in ("status", "start", "stop", "mark", "release 3")),
    "kiroku ctl --data DIR mark --note T --section S", "kiroku ctl --data DIR sim press",
    *(f"kiroku vault --data DIR {a} --json" for a in ("status", "list", "holds", "check --repair")),
    "kiroku audit --data DIR verify --checkpoint F", "kiroku audit --data DIR checkpoint",
    "kiroku audit --data DIR log", "kiroku audit --data DIR prove --entry 42",
    "kiroku audit check-proof FILE --vkey device.vkey --old-checkpoint F",
    "kiroku export --data DIR --recovery-key FILE --recording ID --start 1 --end 2 --ground 1 --recipient R"
    " --reference REF --out PATH",
    "kiroku export --data DIR --manager N --password-file F --recording ID --start 1 --end 2 --ground 1"
    " --recipient R --reference REF --out PATH --exact --mute 1-2 --blur 0,0,1,1@1-2 --blur-faces"
    " --seal-passphrase-file F",
    "kiroku verify PACKAGE --key PEM --passphrase-file F",
    "kiroku call-recorder --data DIR --interface IF --trunk HOST:5060 --pcap FILE",
    "kiroku call-recorder --data DIR --interface IF --trunk HOST --simulate",
    "kiroku calls --data DIR list --number N --since D --until D --direction inbound --json",
    "kiroku report --data DIR --data DIR2 --year 2026 --out DIR",
    "kiroku notice --data DIR --out DIR", "kiroku keys --data DIR add-manager --name N --password-file F",
    "kiroku keys --data DIR list", "kiroku tls --data DIR show", "kiroku tls --data DIR install --cert F --key F",
    "kiroku setup-code --data DIR", "kiroku bench --quick --json FILE",
    "kiroku enroll --data DIR --hub URL --code CODE --ca FILE", "kiroku uplink --data DIR",
    "kiroku hub --config FILE serve", "kiroku hub --config FILE add-manager NAME --password-file F",
    "kiroku city --data DIR --counters 3 --calls --port 8090 --manager NAME --password-file F",
]


@pytest.mark.parametrize("line", README_TABLE + _documented_command_lines())
def test_every_command_line_in_the_readme_and_docs_is_accepted(line):
    build_parser().parse_args(shlex.split(line)[1:])  # argparse exits (a failure here) on what it refuses


def test_common_flags_go_before_or_after_the_action_and_mean_the_same():
    parse = build_parser().parse_args
    for before, after in [
        ("vault --data D --json list", "vault --data D list --json"),
        ("vault --data D --json --config C status", "vault status --data D --config C --json"),
        ("audit --data D --json log --actor a", "audit log --actor a --data D --json"),
        ("calls --data D --json list", "calls list --data D --json"),
        ("keys --data D list", "keys list --data D"),
        ("tls --data D show", "tls show --data D"),
        ("ctl --data D --json --by b status", "ctl status --data D --json --by b"),
    ]:
        assert vars(parse(before.split())) == vars(parse(after.split())), after
    assert parse("vault --data D --json list".split()).json is True
    assert parse("vault --data D list".split()).json is False  # not given anywhere: the default


def test_the_readmes_vault_list_json_prints_json(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    set_up(data)
    assert cli.main(["vault", "--data", str(data), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# -- a seized card: a read-only copy (issue 23, 10) ------------------------------------------------

def _recorded(tmp_path) -> Path:
    """A data folder with a finished recording, the vault closed as the recorder leaves it."""
    from firmware.config import Config
    from firmware.store import Recording
    from firmware.vault import Vault
    from tests.test_vault import make_recording, seal

    data = tmp_path / "data"
    data.mkdir()
    set_up(data)
    vault = Vault.open(data, Config())
    try:
        rec: Recording = make_recording(vault, 1_780_000_000_000_000, "20260528-120000-000")
        seal(vault, rec, 0, 1_780_000_000_000_000, 4096)
        rec.ended_wall_us, rec.ended_at, rec.end_reason = 1_780_000_004_000_000, "2026-05-28T12:00:04+09:00", "stopped"
        vault.end(rec)
    finally:
        vault.close()
    return data


def run_read_only(folder: Path, *args: str):
    """``kiroku ARGS`` with ``folder`` read-only for it: as root (whom permissions do not stop) on a
    read-only bind mount in a mount namespace of its own; otherwise with every write bit taken away."""
    import os
    import shutil
    import subprocess
    import sys

    command = [sys.executable, "-m", "kiroku", *args]
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare(1): no way to make the folder read-only for root")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && touch "$1/probe" 2>/dev/null && ' \
             'echo "still writable" >&2 && exit 99; shift; exec "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(folder), *command],
                            capture_output=True, text=True, timeout=120)
    if result.returncode == 99 or "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.skip(f"a read-only bind mount is not possible here: {result.stderr.strip()}")
    return result


@pytest.mark.parametrize("command", [["vault", "check"], ["vault", "status"], ["vault", "list"], ["vault", "holds"],
                                     ["audit", "verify"], ["audit", "log"], ["audit", "checkpoint"],
                                     ["audit", "prove", "--entry", "1"], ["keys", "list"], ["calls", "list"],
                                     ["report", "--year", "2026", "--out", "OUT"]])
def test_read_only_commands_work_on_a_read_only_copy_of_the_data_folder(tmp_path, command):
    import shutil

    seized = tmp_path / "seized"
    shutil.copytree(_recorded(tmp_path), seized)
    before = sorted(p.name for p in seized.iterdir())
    command = [str(tmp_path / "report") if word == "OUT" else word for word in command]  # written elsewhere
    result = run_read_only(seized, command[0], "--data", str(seized), *command[1:])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if command == ["vault", "list"]:
        assert "20260528-120000-000" in result.stdout
    if command == ["audit", "verify"]:
        assert "the audit log verifies" in result.stdout
    assert sorted(p.name for p in seized.iterdir()) == before  # nothing made beside the evidence


# -- a vault that is recording (issue 23, 11) ------------------------------------------------------

def test_vault_check_while_recording_says_in_progress_and_exits_0(recorder, hardware, data_dir, capsys):
    import os

    from firmware.daemon import lock_data_dir
    from firmware.recorder import State
    from firmware.vault.keys import KeyStore
    from tests.helpers import wait_for

    lock = lock_data_dir(data_dir)  # held by the recorder's process, as `kiroku recorder` holds it
    try:
        hardware.simulator.press()
        hardware.simulator.release()
        wait_for(lambda: recorder.state == State.RECORDING, what="recording")
        wait_for(lambda: KeyStore(data_dir).day_keys("footage"), what="the first segment's day key")
        live = recorder.recording.id
        assert cli.main(["vault", "--data", str(data_dir), "check"]) == 0
        said = capsys.readouterr().out
        assert f"{live}: being recorded now (in progress)" in said
        assert "stopped unexpectedly" not in said
        assert cli.main(["vault", "--data", str(data_dir), "check", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["recording"] == [live]
    finally:
        os.close(lock)
    # The same open recording with nobody holding the lock: the recorder did stop unexpectedly.
    assert cli.main(["vault", "--data", str(data_dir), "check"]) == 1
    assert "stopped unexpectedly" in capsys.readouterr().out
    recorder.stop_recording()
    wait_for(lambda: recorder.state == State.IDLE, what="idle")


# -- key files (issue 23, 9) -----------------------------------------------------------------------

def test_a_damaged_device_key_is_one_line_naming_the_file_and_exit_2(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    set_up(data)
    (data / "keys" / "device.key").write_text("-----BEGIN PRIVATE KEY-----\nbroken by a bad card\n")
    result = subprocess.run([sys.executable, "-m", "kiroku", "recorder", "--simulate", "--data", str(data)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(data / "keys" / "device.key") in lines[0] and "restore it from" in lines[0]


def test_init_after_the_device_key_was_lost_is_refused_and_replaces_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    set_up(data)
    (data / "keys" / "device.key").unlink()
    before = {p: p.read_bytes() for p in (data / "keys").rglob("*") if p.is_file()}
    code = cli.main(["init", "--data", str(data), "--recovery-key-out", str(tmp_path / "again.txt")])
    said = capsys.readouterr().err
    assert code == 2
    assert "keys/device.key is missing" in said and "restore it from the data folder's backup" in said
    assert {p: p.read_bytes() for p in (data / "keys").rglob("*") if p.is_file()} == before
    assert not (data / "keys" / "device.key").exists() and not (tmp_path / "again.txt").exists()
    assert cli.main(["audit", "--data", str(data), "verify"]) == 0  # the log is as it was


def _refused_before_the_sign_lit(recorder, hardware, vault, damaged: Path) -> None:
    from firmware.recorder import RecorderRefused

    recordings = len(vault.recordings())
    with pytest.raises(RecorderRefused) as refused:
        recorder.start_recording(by="test")
    assert str(damaged) in str(refused.value)
    assert "restore it from" in str(refused.value) or "write the recovery key's public key" in str(refused.value)
    assert not hardware.sign.is_lit
    assert len(vault.recordings()) == recordings  # no empty recording left behind
    assert any(str(damaged) in f["message"] for f in recorder.status()["faults"])  # on the console


def test_a_damaged_recovery_recipient_is_found_before_the_sign_lights(recorder, hardware, vault, data_dir):
    damaged = data_dir / "keys" / "recovery.recipient"
    damaged.write_text("age1notakey\n")
    _refused_before_the_sign_lit(recorder, hardware, vault, damaged)


def test_a_damaged_day_key_is_found_before_the_sign_lights(recorder, hardware, vault, data_dir):
    from tests.test_vault import record_briefly

    record_briefly(recorder, hardware, seconds=0.5)  # today's day key now exists
    (damaged,) = (data_dir / "keys" / "day" / "footage").glob("*.age")
    damaged.write_bytes(b"\0" * 200)
    _refused_before_the_sign_lit(recorder, hardware, vault, damaged)


# -- the first manager from init (issue 23, 13) ----------------------------------------------------

def test_init_with_a_manager_makes_one_who_can_log_in_and_unlock(tmp_path, config, hardware, capsys):
    from firmware.control import ControlServer, socket_path
    from firmware.recorder import Recorder
    from firmware.vault import Vault
    from firmware.vault.keys import KeyStore
    from tests.test_webui import make_app
    from tests.webui_helpers import PASSWORDS, login

    data = tmp_path / "data"
    data.mkdir()
    password = tmp_path / "password.txt"
    password.write_text(PASSWORDS["yamada"] + "\n")
    assert cli.main(["init", "--data", str(data), "--recovery-key-out", str(tmp_path / "recovery.txt"),
                     "--manager", "yamada", "--password-file", str(password), "--work-factor", "10"]) == 0
    said = capsys.readouterr().out
    KeyStore(data).unlock_manager("yamada", PASSWORDS["yamada"])  # their key opens with it
    vault = Vault.open(data, config)
    recorder = Recorder(hardware, config, vault).start()
    server = ControlServer(socket_path(data), recorder).start()
    try:
        client = make_app(data).test_client()
        assert client.get("/login").status_code == 200  # not sent to the first-run page
        assert client.get("/setup/").status_code == 404  # the device has its manager
        login(client, "yamada")
        assert client.get("/api/v1/status").status_code == 200
        assert "yamada" in client.get("/account").get_data(as_text=True)
        assert "can log in" in said
    finally:
        server.close()
        recorder.close()
        vault.close()


def test_init_refuses_a_manager_whose_passphrase_is_too_short_before_making_anything(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    password = tmp_path / "password.txt"
    password.write_text("short\n")
    assert cli.main(["init", "--data", str(data), "--recovery-key-out", str(tmp_path / "recovery.txt"),
                     "--manager", "yamada", "--password-file", str(password)]) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    assert not (data / "keys").exists() and not (tmp_path / "recovery.txt").exists()


def test_the_first_run_page_does_not_replace_a_lost_device_key_either(tmp_path):
    from firmware.control import ControlServer, socket_path
    from firmware.hardware import open_hardware
    from firmware.recorder import Recorder
    from firmware.vault import Vault
    from tests.conftest import small_config
    from tests.test_webui import make_app
    from tests.webui_helpers import PASSWORDS, post, setup_code

    data = tmp_path / "data"
    data.mkdir()
    set_up(data)
    (data / "keys" / "device.key").unlink()
    config = small_config()
    hardware = open_hardware(config, simulate=True)
    vault = Vault.open(data, config)
    recorder = Recorder(hardware, config, vault).start()
    server = ControlServer(socket_path(data), recorder).start()
    try:
        client = make_app(data).test_client()
        response = post(client, "/setup/", {"code": setup_code(client), "username": "yamada", "display_name": "山田",
                                            "section": "資産経営課", "password": PASSWORDS["yamada"],
                                            "confirm": PASSWORDS["yamada"]}, token_from="/setup/")
        assert response.status_code == 409
        assert "keys/device.key is missing" in response.get_data(as_text=True)
        assert not (data / "keys" / "device.key").exists()
    finally:
        server.close()
        recorder.close()
        vault.close()
        hardware.close()
