"""The journal that keeps signing on and off while the recorder is down (webui/journal.py):
what a power cut or a crash half-way through folding leaves."""

from __future__ import annotations

import pytest

from webui.journal import AuditJournal


class Log:
    """The audit log as the recorder takes entries: down until told otherwise."""

    def __init__(self, fail_after: int | None = None):
        self.entries: list[tuple] = []
        self.fail_after = fail_after

    def send(self, by, action, subject, purpose, detail):
        if self.fail_after is not None and len(self.entries) >= self.fail_after:
            raise ConnectionError("the recorder went away again")
        self.entries.append((by, action, subject, detail))
        return len(self.entries)


def keep(journal, by, action):
    with journal.locked():
        journal.keep(by, action, subject=by, purpose="", detail={}, why="the recorder is not running")


def test_a_write_cut_short_by_a_power_cut_is_left_out_and_the_next_entry_kept(tmp_path):
    journal = AuditJournal(tmp_path)
    keep(journal, "yamada", "login")
    with open(journal.path, "ab") as f:
        f.write(b'{"id": "abc", "at": "2026-12-0')  # the power went: never answered
    keep(journal, "yamada", "logout")
    log = Log()
    with journal.locked():
        assert journal.fold(log.send) == 2
    assert [e[1] for e in log.entries] == ["login", "logout"]
    assert not journal.path.exists()


def test_a_fold_cut_half_way_neither_loses_nor_repeats_an_entry(tmp_path):
    journal = AuditJournal(tmp_path)
    for action in ("login.failed", "login", "logout"):
        keep(journal, "yamada", action)
    log = Log(fail_after=1)
    with journal.locked(), pytest.raises(ConnectionError):
        journal.fold(log.send)
    assert [e["action"] for e in journal.waiting()] == ["login", "logout"]
    keep(journal, "sato", "login")  # while it is down again
    log.fail_after = None
    with journal.locked():
        assert journal.fold(log.send) == 3
    assert [(e[0], e[1]) for e in log.entries] == [("yamada", "login.failed"), ("yamada", "login"),
                                                    ("yamada", "logout"), ("sato", "login")]
    assert all(e[3]["journaled_at"] and e[3]["journaled_because"] for e in log.entries)
    keep(journal, "sato", "logout")  # a new journal after the fold: the old mark does not hide it
    with journal.locked():
        assert [e["action"] for e in journal.waiting()] == ["logout"]
