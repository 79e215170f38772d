"""The annual operations report (Art. 14) of a scripted year: calls recorded across the
fiscal year's months, requests, provisions and disclosures filed through the API with the
clock moved, failed log-ins, a lockout and a fault. The report's figures must match what
was done — counted again, independently, from the audit log and the index — its PDF must
render with Japanese text and charts, and no name, number or reason may appear in it."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import datetime

import pytest

from firmware.calls import synth
from firmware.calls.recorder import CallRecorder
from firmware.control import ControlServer, socket_path
from tests.calls_helpers import capture_of, replay, write_pcap
from tests.conftest import small_config
from tests.webui_helpers import Api, staff
from domain import accounts, disclosures, times
from firmware import deadlines
from firmware.documents import report
from webui import create_app

pytestmark = pytest.mark.slow

FY = 2026
CALLS = {  # when each call was made: two fall outside fiscal 2026 (April 2026 – March 2027)
    "c-fy2025": datetime(2026, 3, 20, 10, 0), "c-may": datetime(2026, 5, 11, 9, 30),
    "c-aug-1": datetime(2026, 8, 3, 14, 0), "c-aug-2": datetime(2026, 8, 3, 15, 0),
    "c-nov": datetime(2026, 11, 2, 11, 0), "c-feb": datetime(2027, 2, 15, 16, 45),
    "c-fy2027": datetime(2027, 4, 2, 10, 0),
}
REASONS = ("電話で職員を脅迫した件の確認", "苦情対応の記録確認のため特に必要", "録音品質の保守点検")
NAMES = ("窓口 花子", "一宮 次郎", "山田 太郎", "佐藤 花子", "鈴木 一郎", "高橋 次郎")
RECIPIENT = "一宮警察署 生活安全課 田中警部補"


class _Quiet:
    def frames(self):
        return iter(())

    def close(self):
        pass


class Clock:
    """Moves the web UI's clock: its `now` (records' times) and the register's `today`."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch

    def set(self, when: datetime) -> None:
        frozen = when.astimezone()

        class Moved(datetime):
            @classmethod
            def now(cls, tz=None):
                return frozen if tz is None else frozen.astimezone(tz)

        self.mp.setattr(times, "datetime", Moved)
        self.mp.setattr(disclosures, "today", lambda: frozen.date())
        self.mp.setattr(deadlines, "today", lambda: frozen.date())  # the report's count of late decisions


@pytest.fixture
def config():
    return small_config(calls={"segment_seconds": 2.0})


@pytest.fixture
def year(tmp_path, data_dir, vault, config, monkeypatch):
    recorder = CallRecorder(vault, config, trunk="192.0.2.1", source=_Quiet())
    server = ControlServer(socket_path(data_dir), recorder).start()
    app = create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                      "KIROKU_SCRYPT_WORK_FACTOR": 10})
    staff(app.test_client(), app)
    scripts = []
    for i, (cid, when) in enumerate(CALLS.items()):
        ext, city = synth.trunk_pair(i)
        scripts.append(synth.Script(cid, "inbound" if i % 2 else "outbound", ext, city, start=when.timestamp(),
                                    talk=2.0))
    replay(vault, config, write_pcap(tmp_path / "trunk.pcap", capture_of(scripts)))
    ids = {r[0]: r[1] for r in vault.db.execute("SELECT call_id, recording_id FROM calls")}
    clock = Clock(monkeypatch)
    monkeypatch.setattr(accounts, "slow_down", lambda failures: None)  # ten wrong passwords without the waits

    manager, head = Api(app.test_client()), Api(app.test_client())
    assert manager.login("yamada").status_code == 200 and head.login("suzuki").status_code == 200

    def request(when, call, purpose, reason, decision=None):
        clock.set(when)
        r = head.post("/api/v1/requests", {"recording": [ids[call]], "purpose": purpose, "reason": reason,
                                           "responsible_section": "市民課"})
        assert r.status_code == 201, r.get_json()
        if decision:
            rid = r.get_json()["id"]
            d = manager.post(f"/api/v1/requests/{rid}/decision",
                             {"decision": decision, "note": "範囲を限定", "confirm_responsible": True, "confirm_written": True,
                              "scope_recording": [ids[call]], "valid_hours": 2})
            assert d.status_code == 200, d.get_json()

    request(datetime(2026, 3, 25, 10), "c-fy2025", "trouble", REASONS[0], "approved")  # fiscal 2025
    request(datetime(2026, 6, 10, 10), "c-may", "trouble", REASONS[0], "approved")
    request(datetime(2026, 9, 1, 10), "c-aug-1", "business", REASONS[1], "rejected")
    request(datetime(2026, 12, 1, 10), "c-nov", "maintenance", REASONS[2])

    def provision(when, call, ground, reference=""):
        clock.set(when)
        r = manager.post("/api/v1/provisions", {"ground": ground, "recipient": RECIPIENT, "reference": reference,
                                                "request_date": when.date().isoformat(), "recording": ids[call]})
        assert r.status_code == 201, r.get_json()
        return r.get_json()["id"]

    provision(datetime(2026, 10, 5, 9), "c-aug-2", "crime", "一署生第12号")
    committee = provision(datetime(2027, 1, 20, 9), "c-nov", "committee", "第三者委員会 第3号")
    assert manager.post(f"/api/v1/provisions/{committee}/return", {"kind": "erasure"}).status_code == 200
    assert manager.post(f"/api/v1/provisions/{committee}/return", {"outcome": "消去証明書を受領"}).status_code == 200
    provision(datetime(2027, 3, 10, 9), "c-feb", "urgent")

    def disclosure(when, call, kind, **extra):
        clock.set(when)
        r = manager.post("/api/v1/disclosures", {"kind": kind, "requester": NAMES[0], "contact": "0586-28-0000",
                                                 "recording": ids[call], **extra})
        assert r.status_code == 201, r.get_json()
        return r.get_json()["id"]

    personal = disclosure(datetime(2026, 7, 1, 10), "c-may", "personal", identity_check="licence")
    clock.set(datetime(2026, 7, 20, 10))
    assert manager.post(f"/api/v1/disclosures/{personal}/decision",
                        {"decision": "partial", "note": "第三者の音声を除く"}).status_code == 200
    withdrawn = disclosure(datetime(2026, 11, 1, 10), "c-aug-1", "public")
    assert manager.post(f"/api/v1/disclosures/{withdrawn}/close", {"withdrawn": True}).status_code == 200
    disclosure(datetime(2027, 2, 1, 10), "c-feb", "public")  # never decided: late by 20 March
    clock.set(datetime(2027, 3, 20, 10))

    intruder = Api(app.test_client())
    for _ in range(3):
        assert intruder.login("takahashi", "not the password").status_code == 401
    for _ in range(10):
        intruder.login("sato", "guessing again")  # the third holds this browser back; the rest are not tried
    recorder._started = datetime(2026, 11, 30, 8, 0).timestamp()
    recorder.watch(datetime(2026, 11, 30, 10, 0).timestamp())  # a silent trunk on a Monday morning: a fault
    yield app, manager
    server.close()


def _audit(vault, action: str, *, fy_prefix: str | None = None) -> list[dict]:
    entries = [e for e in vault.audit_log.entries(vault.db, limit=100_000) if e["action"] == action]
    return [e for e in entries if fy_prefix is None or e["subject"].startswith(fy_prefix)]


def test_the_reports_figures_are_what_happened_counted_again_from_the_log_and_the_index(year, vault, tmp_path):
    app, _ = year
    with app.app_context():
        r = report.build([(vault.data_dir, "pbx-1")], FY)
    f = r.devices[0]
    # recordings: the five calls of fiscal 2026, each two seconds long, by month
    in_year = [c for c, when in CALLS.items() if datetime(2026, 4, 1) <= when < datetime(2027, 4, 1)]
    assert f.recordings == {"footage": 0, "call": len(in_year)} == {"footage": 0, "call": 5}
    assert f.hours["call"] == pytest.approx(5 * 2.0 / 3600, rel=0.05)
    assert {m: n for m, n in f.monthly_recordings.items() if n} == {5: 1, 8: 2, 11: 1, 2: 1}
    lo, hi = report.fiscal_bounds(FY)
    indexed = vault.db.execute("SELECT count(*) FROM calls WHERE invited_wall_us >= ? AND invited_wall_us < ?",
                               (lo, hi)).fetchone()[0]
    assert indexed == 5
    # requests: from the log, by the fiscal year in their numbers
    filed = _audit(vault, "request.file", fy_prefix=f"{FY}-")
    by_purpose = {p: sum(e["purpose"] == p for e in filed) for p in report.PURPOSES}
    assert {p: sum(f.requests[p].values()) for p in report.PURPOSES} == by_purpose == \
        {"trouble": 1, "maintenance": 1, "business": 1}
    assert f.requests["trouble"]["approved"] == len(_audit(vault, "request.approve", fy_prefix=f"{FY}-")) == 1
    assert f.requests["business"]["rejected"] == len(_audit(vault, "request.reject", fy_prefix=f"{FY}-")) == 1
    assert f.requests["maintenance"]["pending"] == 1
    assert {m: n for m, n in f.monthly_requests.items() if n} == {6: 1, 9: 1, 12: 1}
    # provisions by Art. 9 ground, and the committee's erasure
    created = _audit(vault, "provision.create", fy_prefix=f"{FY}-")
    assert {g: n for g, n in f.provisions.items() if n} == \
        {g: sum(e["detail"]["ground"] == g for e in created) for g in ("crime", "committee", "urgent")} == \
        {"crime": 1, "committee": 1, "urgent": 1}
    assert f.returns == {"return": 0, "erasure": 1, "outstanding": 0}
    assert {m: n for m, n in f.monthly_provisions.items() if n} == {10: 1, 1: 1, 3: 1}
    # disclosures: one partial in time, one withdrawn, one late
    decided = _audit(vault, "disclosure.decide", fy_prefix=f"{FY}-")
    assert f.disclosures["personal"]["partial"] == sum(e["detail"]["decision"] == "partial" for e in decided) == 1
    assert f.disclosures["public"]["withdrawn"] == 1 and f.disclosures["public"]["pending"] == 1
    assert f.disclosures_late == 1
    # security events
    assert f.failed_logins == len(_audit(vault, "login.failed")) == 6
    assert f.lockouts == len(_audit(vault, "login.locked")) == 1
    assert f.faults == len(_audit(vault, "fault.raised")) == 1
    # the log is pinned by its latest signed checkpoint, which verifies against the device key
    from firmware.vault.audit import verify_note

    checkpoint = verify_note(f.checkpoint, (vault.keys.root / "device.vkey").read_text())
    assert checkpoint.size == vault.db.execute("SELECT count(*) FROM audit").fetchone()[0]


def test_the_published_files_render_in_japanese_with_charts_and_hold_no_personal_data(year, data_dir, tmp_path):
    app, manager = year
    out = tmp_path / "report"
    subprocess.run([sys.executable, "-m", "kiroku", "report", "--data", str(data_dir), "--year", str(FY),
                    "--out", str(out)], check=True, capture_output=True)
    pdf, csv_file, html_file = (out / f"kiroku-report-{FY}.{k}" for k in ("pdf", "csv", "html"))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "運用状況報告（令和8年度）" in text and "月別の記録件数" in text and "監査ログのチェックポイント" in text
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True)
    from PIL import Image

    import numpy as np

    px = np.asarray(Image.open(next(tmp_path.glob("page*.png"))).convert("RGB")).astype(int)
    green = int(((px[..., 1] > 100) & (px[..., 0] < 80) & (px[..., 2] < 80)).sum())
    assert green > 500, "the charts' bars are not on the first page"
    table = list(csv.reader(io.StringIO(csv_file.read_text(encoding="utf-8-sig"))))
    assert table[0][:3] == ["年度", "区分", "項目"]
    by_item = {row[2]: row[3:] for row in table[1:]}
    assert by_item["通話記録 件数"] == ["5", "5"] and by_item["緊急（第9条第5号）"] == ["1", "1"]
    page_html = html_file.read_text(encoding="utf-8")
    for published in (text.replace("\n", "").replace(" ", ""), page_html):  # the regulation by its own name
        assert "一宮市業務記録システムの設置及び運用に関する要綱第14条" in published
        assert "閲覧" not in published, "Art. 8 says 視聴の請求"
    shown = manager.get(f"/admin/report/?year={FY}")
    assert shown.status_code == 200
    article = shown.get_data(as_text=True).split('<article class="report">')[1].split("</article>")[0]
    assert article.count("<svg") == 3
    everything = "\n".join([text, csv_file.read_text(encoding="utf-8-sig"), page_html, article])
    for secret in (*NAMES, RECIPIENT, *REASONS, "0586-28-0000", "0422123", "+81", "sato", "takahashi", "第三者の音声",
                   "一署生第12号", "消去証明書"):
        assert secret not in everything, f"{secret!r} is in the report"
    api = manager.get(f"/api/v1/report?year={FY}").get_json()
    assert api["total"]["recordings"]["call"] == 5
    download = manager.get(f"/admin/report/{FY}.pdf")
    assert download.status_code == 200 and download.data[:5] == b"%PDF-"


def test_a_report_over_two_devices_has_each_and_their_total(year, vault, tmp_path):
    from tests.conftest import set_up

    app, _ = year
    other = tmp_path / "counter-2"
    other.mkdir()
    set_up(other)  # a second device, set up but idle all year
    with app.app_context():
        r = report.build([(vault.data_dir, "pbx-1"), (other, "counter-2")], FY)
    assert [f.device for f in r.devices] == ["pbx-1", "counter-2"]
    assert r.devices[1].recordings == {"footage": 0, "call": 0} and r.devices[1].checkpoint
    assert r.total.recordings == r.devices[0].recordings and r.total.requests == r.devices[0].requests
    assert r.total.failed_logins == r.devices[0].failed_logins == 6
    table = {item: values for _section, item, values in report.rows(r)}
    assert table["通話記録 件数"] == [5, 0, 5]
