"""A full card (issue 23, item 8), on a real small filesystem (tmpfs), so free space is what
``statvfs`` says: the reserve is kept free while recording, and a reserve that cannot fit says
so instead of blaming footage that is not there."""

from __future__ import annotations

import os
import sqlite3

import pytest

from firmware.recorder import Recorder, RecorderRefused, State
from firmware.vault import Vault
from tests.conftest import set_up, small_config
from tests.helpers import wait_for
from tests.test_vault import small_filesystem


def fill(path, leave_free: int) -> None:
    """Something other than footage fills the card, down to ``leave_free`` bytes."""
    st = os.statvfs(path)
    with open(path / "ballast", "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_free))
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def on_a_small_card(tmp_path, hardware):
    def make(megabytes: int, reserve_mb: int):
        fs = small_filesystem(tmp_path / "card", megabytes)
        card = fs.__enter__()
        data = card / "data"
        data.mkdir()
        set_up(data)
        config = small_config(retention={"reserve_mb": reserve_mb})
        vault = Vault.open(data, config)
        recorder = Recorder(hardware, config, vault).start()
        made.append((fs, vault, recorder))
        return card, data, recorder

    made = []
    yield make
    for fs, vault, recorder in made:
        recorder.close()
        vault.close()
        fs.__exit__(None, None, None)


def test_a_recording_ends_indexed_and_audited_before_it_eats_the_reserve(on_a_small_card):
    card, data, recorder = on_a_small_card(64, reserve_mb=16)
    hw = recorder.hw
    hw.simulator.press()
    hw.simulator.release()
    wait_for(lambda: recorder.state == State.RECORDING, what="recording")
    wait_for(lambda: recorder.status()["recording"]["segments"] >= 1, timeout=20, what="a first segment",
             progress=lambda: recorder.status()["recording"]["duration_s"])
    fill(card, leave_free=10 * 2**20)  # 6 MB into the 16 MB reserve, and nothing expired to overwrite
    wait_for(lambda: recorder.state == State.IDLE, timeout=30, what="the recording ended by the full card")
    (fault,) = [f for f in recorder.status()["faults"] if f["device"] == "storage"]
    assert "the card is full" in fault["message"] and "reserve" in fault["message"], fault
    st = os.statvfs(card)
    assert st.f_bavail * st.f_frsize > 8 * 2**20, "the reserve was kept for the index and the system"
    conn = sqlite3.connect(data / "kiroku.db")
    ended = conn.execute("SELECT end_reason, (SELECT count(*) FROM segments s WHERE s.recording_id = r.id)"
                         " FROM recordings r").fetchall()
    logged = [a for (a,) in conn.execute("SELECT detail FROM audit WHERE action = 'fault'")]
    conn.close()
    assert ended and ended[0][0] == "the card is full" and ended[0][1] >= 1, ended
    assert any("the card is full" in d for d in logged), "the fault is in the audit log"


def test_a_reserve_larger_than_the_card_says_so_not_that_footage_fills_it(on_a_small_card):
    _, _, recorder = on_a_small_card(32, reserve_mb=40)
    with pytest.raises(RecorderRefused):
        recorder.start_recording(by="tanaka")
    (fault,) = [f for f in recorder.status()["faults"] if f["device"] == "storage"]
    assert "retention.reserve_mb (40 MB)" in fault["message"] and "lower it" in fault["message"], fault
    assert "full of footage" not in fault["message"]


def test_a_card_filled_by_something_else_says_so(on_a_small_card):
    card, _, recorder = on_a_small_card(64, reserve_mb=16)
    fill(card, leave_free=20 * 2**20)
    with pytest.raises(RecorderRefused):
        recorder.start_recording(by="tanaka")
    (fault,) = [f for f in recorder.status()["faults"] if f["device"] == "storage"]
    assert "not of footage" in fault["message"], fault


def test_a_card_that_fills_as_the_index_is_written_keeps_the_segment_ends_the_recording_and_logs_why(
        on_a_small_card, monkeypatch):
    card, data, recorder = on_a_small_card(64, reserve_mb=16)
    vault = recorder.store
    index_segment, filled = vault._index_segment, []

    def as_the_card_fills(info):  # something else takes the last byte just as the segment is indexed
        if not filled:
            fill(card, leave_free=0)
            filled.append(info.seq)
        return index_segment(info)

    monkeypatch.setattr(vault, "_index_segment", as_the_card_fills)
    hw = recorder.hw
    hw.simulator.press()
    hw.simulator.release()
    wait_for(lambda: recorder.state != State.RECORDING and filled, timeout=30, what="the card filled")
    wait_for(lambda: recorder.state in (State.IDLE, State.FAULT), timeout=30, what="the recording ended")
    conn = sqlite3.connect(data / "kiroku.db")
    (rec_id, ended_at, reason), = conn.execute("SELECT id, ended_at, end_reason FROM recordings").fetchall()
    indexed = [s for (s,) in conn.execute("SELECT seq FROM segments WHERE recording_id = ?", (rec_id,))]
    logged = [(a, d) for a, d in conn.execute("SELECT action, detail FROM audit WHERE action IN ('fault', 'recording.stop')")]
    conn.close()
    assert filled[0] in indexed, "the segment that was being indexed is in the index, not left beside it"
    assert ended_at and "full" in reason, (ended_at, reason)
    assert [a for a, _ in logged].count("recording.stop") == 1
    assert any(a == "fault" and "full" in d for a, d in logged), "the fault is in the audit log"
    (fault,) = [f for f in recorder.status()["faults"] if f["device"] == "storage"]
    assert "full" in fault["message"]
    os.unlink(card / "ballast")  # room again: the next recording starts
    recorder.start_recording(by="tanaka")
    wait_for(lambda: recorder.state == State.RECORDING, timeout=10, what="recording again")
