"""The index and the audit log vouch for each other (firmware/vault/vouch.py): what an attacker
with a shell on the device, but without a witness off it, could do to the evidence before —
cut the log short, empty it, swap, copy or relabel segments with their rows, delete a held
recording whole — is named by ``kiroku audit verify`` and ``kiroku vault check``, and a held
recording that has gone is a fault on the dashboard."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from firmware.recorder import Recorder, State
from firmware.vault import merkle
from tests.helpers import wait_for
from tests.test_vault import days_ago, kiroku, make_recording, retention_vault, seal


@pytest.fixture
def two_recordings(tmp_path):
    """Two recordings of three segments each, written through the real sealing path."""
    data = tmp_path / "data"
    vault, _ = retention_vault(data)
    base = days_ago(0.5)
    for n, rec_id in enumerate(("r1", "r2")):
        rec = make_recording(vault, base + n * 60_000_000, rec_id)
        for seq in range(3):
            seal(vault, rec, seq, base + n * 60_000_000 + seq * 4_000_000, 2000 + seq)
        rec.ended_wall_us = base + n * 60_000_000 + 12_000_000
        rec.ended_at, rec.end_reason = "", "stopped"
        vault.end(rec)
    vault.close()
    assert kiroku("audit", "--data", data, "verify").returncode == 0
    assert kiroku("vault", "--data", data, "check").returncode == 0
    return data


def sql(data, *statements) -> None:
    conn = sqlite3.connect(data / "kiroku.db")
    with conn:
        for statement in statements:
            conn.execute(*statement) if isinstance(statement, tuple) else conn.execute(statement)
    conn.close()


def rebuild_state(data) -> None:
    """What someone without the device key can do: the tree's state made again from the leaves left."""
    conn = sqlite3.connect(data / "kiroku.db")
    tree = merkle.CompactRange()
    for (leaf,) in conn.execute("SELECT leaf_hash FROM audit ORDER BY seq"):
        tree.append(leaf)
    with conn:
        conn.execute("UPDATE audit_state SET size = ?, stack = ? WHERE id = 1", (tree.size, tree.to_bytes()))
    conn.close()


def first_segment_entry(data) -> int:
    conn = sqlite3.connect(data / "kiroku.db")
    seq = conn.execute("SELECT min(seq) FROM audit WHERE action = 'segment.sealed'").fetchone()[0]
    conn.close()
    return seq


def rows(data, query, *args):
    conn = sqlite3.connect(data / "kiroku.db")
    out = conn.execute(query, args).fetchall()
    conn.close()
    return out


# -- the log's end ----------------------------------------------------------------------------------

def test_a_log_cut_short_with_its_state_rebuilt_fails_verify_and_names_what_is_missing(two_recordings):
    data = two_recordings
    cut = first_segment_entry(data) + 2
    sql(data, ("DELETE FROM audit WHERE seq >= ?", (cut,)))
    rebuild_state(data)
    out = kiroku("audit", "--data", data, "verify")
    assert out.returncode != 0, out.stdout
    said = out.stdout + out.stderr
    assert f"the log ends at entry {cut - 1}" in said and "entries were removed" in said, said
    assert "segment segments/footage/" in said


@pytest.mark.parametrize("how", ["emptied", "state row deleted"])
def test_an_emptied_log_or_a_deleted_state_fails_verify(two_recordings, how):
    data = two_recordings
    if how == "emptied":
        sql(data, "DELETE FROM audit", "UPDATE audit_state SET size = 0, stack = x'' WHERE id = 1")
    else:
        sql(data, "DELETE FROM audit_state")
    out = kiroku("audit", "--data", data, "verify")
    assert out.returncode != 0, out.stdout
    assert ("the log ends at entry -1" if how == "emptied" else "state row is gone") in out.stdout + out.stderr


# -- the index against the log --------------------------------------------------------------------

def check_says(data) -> str:
    out = kiroku("vault", "--data", data, "check")
    assert out.returncode == 1, out.stdout + out.stderr
    verify = kiroku("audit", "--data", data, "verify")
    assert verify.returncode != 0, "the audit log no longer vouches for this index"
    return out.stdout


def test_two_segments_swapped_with_their_rows_are_named(two_recordings):
    data = two_recordings
    (a, a_size, a_sha), (b, b_size, b_sha) = rows(
        data, "SELECT path, size, sha256 FROM segments WHERE seq = 1 ORDER BY recording_id")
    tmp = data / "swap"
    shutil.move(data / a, tmp)
    shutil.move(data / b, data / a)
    shutil.move(tmp, data / b)
    sql(data, ("UPDATE segments SET size = ?, sha256 = ? WHERE path = ?", (b_size, b_sha, a)),
        ("UPDATE segments SET size = ?, sha256 = ? WHERE path = ?", (a_size, a_sha, b)))
    said = check_says(data)
    for path in (a, b):
        assert f"segment {path}: its row differs from log entry" in said and "sha256" in said, said
    assert "damaged" not in said, "files and rows agree: only the log can tell"


def test_a_segment_copied_over_another_recordings_is_named(two_recordings):
    data = two_recordings
    (src, size, sha), (dst, _, _) = rows(data, "SELECT path, size, sha256 FROM segments WHERE seq = 0"
                                         " ORDER BY recording_id")
    shutil.copyfile(data / src, data / dst)
    sql(data, ("UPDATE segments SET size = ?, sha256 = ? WHERE path = ?", (size, sha, dst)))
    said = check_says(data)
    assert f"segment {dst}: its row differs" in said and src not in said.split(dst)[0].split("\n")[-1]


def test_a_segment_relabelled_into_another_window_is_named(two_recordings):
    data = two_recordings
    ((path, start, end),) = rows(data, "SELECT path, start_wall_us, end_wall_us FROM segments"
                                 " WHERE recording_id = 'r2' AND seq = 2")
    sql(data, ("UPDATE segments SET start_wall_us = ?, end_wall_us = ? WHERE path = ?",
               (start - 3_600_000_000, end - 3_600_000_000, path)))
    said = check_says(data)
    assert f"segment {path}: its row differs from log entry" in said and "start_wall_us, end_wall_us" in said


def test_a_row_added_behind_the_logs_back_is_named(two_recordings):
    data = two_recordings
    sql(data, "INSERT INTO segments (recording_id, seq, record_class, key_day, path, start_wall_us, end_wall_us,"
              " start_mono_us, end_mono_us, boot_id, clock_synchronised, has_audio, video_frames, audio_samples,"
              " size, sha256) SELECT recording_id, 9, record_class, key_day, path || '.x', start_wall_us,"
              " end_wall_us, start_mono_us, end_mono_us, boot_id, 1, 0, 0, 0, size, sha256 FROM segments"
              " WHERE recording_id = 'r1' AND seq = 0")
    assert "no log entry committed it" in check_says(data)


# -- a held recording deleted whole ----------------------------------------------------------------

def delete_recording(data, rec_id: str) -> None:
    """Files and rows, everything the index has of it — as someone hiding it would."""
    for (path,) in rows(data, "SELECT path FROM segments WHERE recording_id = ?", rec_id):
        (data / path).unlink()
        (data / path).with_suffix(".json").unlink(missing_ok=True)
    sql(data, ("DELETE FROM marks WHERE recording_id = ?", (rec_id,)),
        ("DELETE FROM holds WHERE recording_id = ?", (rec_id,)),
        ("DELETE FROM segments WHERE recording_id = ?", (rec_id,)),
        ("DELETE FROM recordings WHERE id = ?", (rec_id,)))


def test_a_held_recording_deleted_whole_is_named_by_check_and_is_a_fault_on_the_dashboard(
        hardware, config, vault, data_dir):
    recorder = Recorder(hardware, config, vault, sweep_seconds=0.5).start()
    try:
        hardware.simulator.press()
        hardware.simulator.release()
        wait_for(lambda: recorder.state == State.RECORDING, what="recording")
        recorder.mark(by="tanaka", note="raised voice", section="市民課")  # an incident: held
        wait_for(lambda: recorder.status()["recording"]["segments"] >= 1, timeout=20, what="a first segment",
                 progress=lambda: recorder.status()["recording"]["duration_s"])
        recorder.stop_recording()
        wait_for(lambda: recorder.state == State.IDLE, what="idle")
        rec_id = recorder.last_recording.id
        wait_for(lambda: rows(data_dir, "SELECT count(*) FROM holds WHERE recording_id = ?", rec_id)[0][0] == 1,
                 what="the incident's hold")
        assert not [f for f in recorder.status()["faults"] if f["device"] == "evidence"]
        delete_recording(data_dir, rec_id)
        wait_for(lambda: [f for f in recorder.status()["faults"] if f["device"] == "evidence"], timeout=15,
                 what="the evidence fault")
        (fault,) = [f for f in recorder.status()["faults"] if f["device"] == "evidence"]
        assert "under a hold" in fault["message"] and rec_id in fault["message"], fault
    finally:
        recorder.close()
    out = kiroku("vault", "--data", data_dir, "check")
    assert out.returncode == 1
    assert "UNDER HOLD: committed by log entry" in out.stdout and f"(recording {rec_id})" in out.stdout, out.stdout
    assert "not in the index" in out.stdout



def test_the_status_shows_the_logs_size_and_root_to_write_down(recorder, vault, data_dir):
    """Until a witness off the device keeps checkpoints, a person can: ``kiroku ctl status``
    shows the log's size and root, the same as the signed checkpoint ``kiroku audit checkpoint``
    prints."""
    from kiroku.cli.ctl import format_status

    vault.audit("tanaka", "duty.sign_on", subject="counter-1")
    for _ in range(5):  # the recorder's own entries (a sweep's warning) may come in between: look again
        status = recorder.status()
        signed = kiroku("audit", "--data", data_dir, "checkpoint").stdout
        size = rows(data_dir, "SELECT count(*) FROM audit")[0][0]
        if status["log"]["entries"] == size:
            break
    assert status["log"]["entries"] == size
    assert f"\n{size}\n{status['log']['root']}\n" in signed, signed
    assert f"log        {size} entries, root {status['log']['root']}" in format_status(status)
