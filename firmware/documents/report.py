"""The annual operations report (Art. 14): how the systems were used in a fiscal year.

Built only from what the devices already keep — the vault's index and audit log
(kiroku.db) and the web UI's registers (web.db) — per device and in total, for the fiscal
year from April to March. It holds **counts only**: no name, number, reason, note or
recording id leaves here, so it can be published as it is. The audit log's latest signed
checkpoint of each device is printed in it, so the published report pins the log: a log
rewritten later no longer contains that checkpoint (``kiroku audit verify --checkpoint``).

Outputs: a Japanese PDF for publication with charts (monthly recordings, requests and
provisions), the same figures as CSV, and an HTML page (the admin page shows the same).
"""

from __future__ import annotations

import csv
import html
import io
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from firmware import deadlines
from firmware.sqlite import open_db
from firmware.regulation import (
    REQUEST_PURPOSES,
    Decision,
    DisclosureDecision,
    DisclosureKind,
    Ground,
    Hearing,
    RecordClass,
    RequestStatus,
)

PURPOSES = REQUEST_PURPOSES  # Art. 7 (1)(2)(4); (3) is a provision
GROUNDS = tuple(Ground)  # Art. 9 (1)–(5)
REQUEST_OUTCOMES = (Decision.APPROVED, Decision.REJECTED, RequestStatus.WITHDRAWN, "pending")
DISCLOSURE_KINDS = tuple(DisclosureKind)
DISCLOSURE_OUTCOMES = (*DisclosureDecision, "withdrawn", "pending")
MONTHS = (4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3)
RECORD_CLASSES = tuple(RecordClass)
NOT_HEARD = tuple(h for h in Hearing if h != Hearing.HEARD)

# The report's own words: its rows name each value as briefly as a table allows.
LABELS = {
    **{p.value: p.short_ja for p in PURPOSES},
    "approved": Decision.APPROVED.short_ja, "rejected": Decision.REJECTED.short_ja,
    "withdrawn": RequestStatus.WITHDRAWN.short_ja, "pending": "処理中",
    **{g.value: g.short_ja for g in Ground},
    **{k.value: k.short_ja for k in DisclosureKind},
    **{d.value: d.short_ja for d in DisclosureDecision},
    **{c.value: c.short_ja for c in RecordClass},
}


def reiwa(fy: int) -> str:
    return f"令和{fy - 2018}年度"


def fiscal_bounds(fy: int) -> tuple[int, int]:
    """[1 April fy, 1 April fy+1) in local time, as µs since the epoch."""
    start = datetime(fy, 4, 1).astimezone()
    end = datetime(fy + 1, 4, 1).astimezone()
    return int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)


def _month_of_us(wall_us: int) -> int:
    return datetime.fromtimestamp(wall_us / 1e6).astimezone().month


def _month_of_iso(text: str) -> int:
    return datetime.fromisoformat(text).astimezone().month


@dataclass
class Figures:
    """One device's year, or the total of several."""

    device: str
    recordings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_CLASSES, 0))
    hours: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RECORD_CLASSES, 0.0))
    monthly_recordings: dict[int, int] = field(default_factory=lambda: dict.fromkeys(MONTHS, 0))
    monthly_requests: dict[int, int] = field(default_factory=lambda: dict.fromkeys(MONTHS, 0))
    monthly_provisions: dict[int, int] = field(default_factory=lambda: dict.fromkeys(MONTHS, 0))
    incidents: int = 0
    # answered calls with a side not heard, by why (a call with both sides so counts once a why)
    calls_not_heard: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NOT_HEARD, 0))
    calls_not_recorded: int = 0  # on lines the manager does not record (Art. 3): a count, nothing else
    requests: dict[str, dict[str, int]] = field(
        default_factory=lambda: {p: dict.fromkeys(REQUEST_OUTCOMES, 0) for p in PURPOSES})
    viewings: int = 0  # viewing sessions opened (the keys unlocked)
    provisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GROUNDS, 0))
    provision_exports: int = 0
    returns: dict[str, int] = field(default_factory=lambda: {"return": 0, "erasure": 0, "outstanding": 0})
    disclosures: dict[str, dict[str, int]] = field(
        default_factory=lambda: {k: dict.fromkeys(DISCLOSURE_OUTCOMES, 0) for k in DISCLOSURE_KINDS})
    disclosures_late: int = 0  # decided after their deadline, or still undecided past it
    overwritten_segments: int = 0
    overwritten_gb: float = 0.0
    day_keys_destroyed: int = 0
    failed_logins: int = 0
    lockouts: int = 0
    faults: int = 0
    unsynced_hours: float = 0.0  # recorded while the clock was not synchronised
    checkpoint: str = ""

    def add(self, other: "Figures") -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, dict):
                        for k2, v2 in v.items():
                            mine[k][k2] += v2
                    else:
                        mine[k] += v
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(self, name, mine + value)


@dataclass
class Report:
    fiscal_year: int
    devices: list[Figures]
    total: Figures
    generated_at: str

    @property
    def title(self) -> str:
        return f"業務記録システム 運用状況報告（{reiwa(self.fiscal_year)}）"


# -- counting ------------------------------------------------------------------------------
def device_figures(data_dir: Path, fy: int, device: str) -> Figures:
    f = Figures(device)
    lo, hi = fiscal_bounds(fy)
    vault = Path(data_dir) / "kiroku.db"
    if vault.exists():
        conn = open_db(vault, readonly=True)  # on a read-only copy too: an auditor's
        try:
            _vault_figures(conn, f, lo, hi)
        finally:
            conn.close()
    web = Path(data_dir) / "web" / "web.db"
    if web.exists():
        conn = open_db(web, readonly=True)
        conn.row_factory = sqlite3.Row
        try:
            _web_figures(conn, f, fy)
        finally:
            conn.close()
    return f


def _vault_figures(conn: sqlite3.Connection, f: Figures, lo: int, hi: int) -> None:
    # What was recorded: the segments' time (overwritten ones included — they were recorded);
    # a call that rang unanswered, with no sound, recorded nothing.
    rows = conn.execute(
        "SELECT r.record_class, r.started_wall_us, (SELECT coalesce(sum(s.end_wall_us - s.start_wall_us), 0)"
        " FROM segments s WHERE s.recording_id = r.id) AS recorded"
        " FROM recordings r WHERE r.started_wall_us >= ? AND r.started_wall_us < ?"
        " AND (r.record_class = 'footage' OR EXISTS (SELECT 1 FROM segments s WHERE s.recording_id = r.id))",
        (lo, hi)).fetchall()
    for cls, start, recorded in rows:
        f.recordings[cls] += 1
        f.hours[cls] += recorded / 3.6e9
        f.monthly_recordings[_month_of_us(start)] += 1
    f.incidents = conn.execute("SELECT count(*) FROM marks WHERE wall_us >= ? AND wall_us < ?", (lo, hi)).fetchone()[0]
    count_not_heard(f, conn.execute("SELECT external_heard, city_heard FROM calls WHERE invited_wall_us >= ?"
                                    " AND invited_wall_us < ? AND ended_wall_us IS NOT NULL", (lo, hi)))
    f.unsynced_hours = conn.execute(
        "SELECT coalesce(sum(end_wall_us - start_wall_us), 0) FROM segments WHERE clock_synchronised = 0"
        " AND start_wall_us >= ? AND start_wall_us < ?", (lo, hi)).fetchone()[0] / 3.6e9
    segments, size, days = 0, 0, 0
    for seg, nbytes, destroyed, at in conn.execute("SELECT segments, bytes, days_destroyed, at FROM overwrites"):
        if lo <= _us(at) < hi:
            segments += seg
            size += nbytes
            days += len([d for d in destroyed.split(",") if d])
    f.overwritten_segments, f.overwritten_gb, f.day_keys_destroyed = segments, size / 1e9, days
    # Entries carry the offset they were written with: a day either side is read by text, and
    # each entry's time is then compared as a time, not as a string.
    counts: dict[str, int] = {}
    for action, at in conn.execute(
            "SELECT action, at FROM audit WHERE action IN ('login.failed', 'login.locked', 'key.locked', 'fault',"
            " 'fault.raised', 'key.unlock', 'call.not_recorded') AND at >= ? AND at < ?", (_iso(lo - 86_400_000_000), _iso(hi + 86_400_000_000))):
        if lo <= _us(at) < hi:
            counts[action] = counts.get(action, 0) + 1
    f.failed_logins = counts.get("login.failed", 0)
    f.lockouts = counts.get("login.locked", 0) + counts.get("key.locked", 0)  # guessers held back, keys locked
    f.faults = counts.get("fault", 0) + counts.get("fault.raised", 0)
    f.viewings = counts.get("key.unlock", 0)
    f.calls_not_recorded = counts.get("call.not_recorded", 0)
    last = conn.execute("SELECT seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    f.checkpoint = _checkpoint(conn) if last else ""


def count_not_heard(f: Figures, sides) -> None:
    """Count calls by each reason a side of them was not heard: ``sides``, (external, city) pairs."""
    for external, city in sides:
        for why in {external, city} & set(NOT_HEARD):
            f.calls_not_heard[why] += 1


def _iso(wall_us: int) -> str:
    return datetime.fromtimestamp(wall_us / 1e6).astimezone().isoformat(timespec="milliseconds")


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1e6)


def _checkpoint(conn: sqlite3.Connection) -> str:
    """The log's latest signed checkpoint (a C2SP signed note), read without the device key."""
    from firmware.vault.audit import AuditLog
    from firmware.vault.keys import KeyStore

    path = Path(conn.execute("PRAGMA database_list").fetchone()[2]).parent
    return AuditLog(KeyStore(path)).latest_checkpoint(conn)


def _web_figures(conn: sqlite3.Connection, f: Figures, fy: int) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "requests" in tables:
        for r in conn.execute("SELECT r.purpose, r.status, r.created_at, d.decision FROM requests r"
                              " LEFT JOIN decisions d ON d.request_id = r.id WHERE r.fiscal_year = ?", (fy,)):
            outcome = r["decision"] or ("withdrawn" if r["status"] == "withdrawn" else "pending")
            f.requests[r["purpose"]][outcome] += 1
            f.monthly_requests[_month_of_iso(r["created_at"])] += 1
    if "provisions" in tables:
        for p in conn.execute("SELECT ground, created_at, return_kind, return_done_at FROM provisions"
                              " WHERE fiscal_year = ?", (fy,)):
            f.provisions[p["ground"]] += 1
            f.monthly_provisions[_month_of_iso(p["created_at"])] += 1
            if p["return_kind"]:
                f.returns[p["return_kind"] if p["return_done_at"] else "outstanding"] += 1
        f.provision_exports = conn.execute(
            "SELECT count(*) FROM provision_exports e JOIN provisions p ON p.id = e.provision_id"
            " WHERE p.fiscal_year = ?", (fy,)).fetchone()[0]
    if "disclosures" in tables:
        for d in conn.execute("SELECT * FROM disclosures WHERE fiscal_year = ?", (fy,)):
            outcome = "withdrawn" if d["withdrawn"] else (d["decision"] or "pending")
            f.disclosures[d["kind"]][outcome] += 1
            decided = deadlines.parse_date(d["decided_on"] or "")
            if not d["withdrawn"] and (decided or deadlines.today()) > deadlines.deadline(d):
                f.disclosures_late += 1


def build(devices: list[tuple[Path, str]], fy: int) -> Report:
    """``devices``: (data folder, device id) of each device the report covers."""
    figures = [device_figures(path, fy, name) for path, name in devices]
    total = Figures("合計")
    for f in figures:
        total.add(f)
    total.checkpoint = ""
    return Report(fy, figures, total, datetime.now().astimezone().isoformat(timespec="seconds"))


# -- the same figures, three ways ----------------------------------------------------------
def rows(report: Report) -> list[tuple[str, str, list]]:
    """(section, item, [value per device…, total]): the one table the CSV, the HTML and the PDF print."""
    out: list[tuple[str, str, list]] = []

    def add(section, item, get):
        out.append((section, item, [get(f) for f in (*report.devices, report.total)]))

    for cls in RECORD_CLASSES:
        add("記録", f"{LABELS[cls]} 件数", lambda f, c=cls: f.recordings[c])
        add("記録", f"{LABELS[cls]} 時間", lambda f, c=cls: round(f.hours[c], 2))
    add("記録", "トラブル等のマーク", lambda f: f.incidents)
    add("記録", "時刻未同期で記録した時間", lambda f: round(f.unsynced_hours, 2))
    for why in NOT_HEARD:
        add("記録", f"通話の片側が録音できなかった件数（{why.ja}）", lambda f, w=why: f.calls_not_heard[w])
    add("記録", "録音しない回線の通話の件数（第3条）", lambda f: f.calls_not_recorded)
    for p in PURPOSES:
        for o in REQUEST_OUTCOMES:
            add("視聴の請求（第7条・第8条）", f"{LABELS[p]} {LABELS[o]}", lambda f, p=p, o=o: f.requests[p][o])
    add("視聴の請求（第7条・第8条）", "視聴の実施（鍵の解除）", lambda f: f.viewings)
    for g in GROUNDS:
        add("外部提供（第9条〜第11条）", LABELS[g], lambda f, g=g: f.provisions[g])
    add("外部提供（第9条〜第11条）", "提供データの作成", lambda f: f.provision_exports)
    add("外部提供（第9条〜第11条）", "返却済み（第10条第2項）", lambda f: f.returns["return"])
    add("外部提供（第9条〜第11条）", "消去済み（第10条第2項）", lambda f: f.returns["erasure"])
    add("外部提供（第9条〜第11条）", "返却・消去の未了", lambda f: f.returns["outstanding"])
    for k in DISCLOSURE_KINDS:
        for o in DISCLOSURE_OUTCOMES:
            add("開示請求（第12条）", f"{LABELS[k]} {LABELS.get(o, o)}", lambda f, k=k, o=o: f.disclosures[k][o])
    add("開示請求（第12条）", "期限を過ぎた決定・未決定", lambda f: f.disclosures_late)
    add("消去（第6条）", "上書き消去したセグメント", lambda f: f.overwritten_segments)
    add("消去（第6条）", "上書き消去した容量（GB）", lambda f: round(f.overwritten_gb, 2))
    add("消去（第6条）", "破棄した日鍵", lambda f: f.day_keys_destroyed)
    add("安全管理（第6条）", "ログイン失敗", lambda f: f.failed_logins)
    add("安全管理（第6条）", "ロック（ログインの一時停止・鍵）", lambda f: f.lockouts)
    add("安全管理（第6条）", "装置の異常", lambda f: f.faults)
    return out


def _made(text: str) -> str:
    """When the report was made, as a published document says it: 2026年12月7日 12:45."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    return f"{at.year}年{at.month}月{at.day}日 {at:%H:%M}"


def _month_label(m: int) -> str:
    return f"{m}月"


def to_csv(report: Report) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["年度", "区分", "項目", *(f.device for f in report.devices), "合計"])
    for section, item, values in rows(report):
        w.writerow([reiwa(report.fiscal_year), section, item, *values])
    for name, key in (("月別 記録件数", "monthly_recordings"), ("月別 視聴請求", "monthly_requests"),
                      ("月別 外部提供", "monthly_provisions")):
        for m in MONTHS:
            w.writerow([reiwa(report.fiscal_year), name, _month_label(m),
                        *(getattr(f, key)[m] for f in (*report.devices, report.total))])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # a BOM, so that Excel reads the Japanese right


def _svg_bars(title: str, values: dict[int, int]) -> str:
    top = max(values.values()) or 1
    bars = []
    for i, m in enumerate(MONTHS):
        h = 120 * values[m] / top
        x = 40 + i * 40
        bars.append(f'<rect x="{x}" y="{150 - h:.1f}" width="28" height="{h:.1f}" fill="#2e7d32"/>'
                    f'<text x="{x + 14}" y="168" font-size="11" text-anchor="middle">{m}月</text>'
                    f'<text x="{x + 14}" y="{146 - h:.1f}" font-size="11" text-anchor="middle">{values[m]}</text>')
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg viewBox="0 0 520 175" width="100%"'
            f' role="img" aria-label="{html.escape(title)}"><line x1="36" y1="150" x2="520" y2="150" stroke="#000"/>'
            + "".join(bars) + "</svg></figure>")


def body_html(report: Report) -> str:
    """The report as an HTML fragment (the admin page embeds it; ``to_html`` wraps it)."""
    e = html.escape
    heads = "".join(f"<th>{e(f.device)}</th>" for f in report.devices) + "<th>合計</th>"
    parts = [f"<h1>{e(report.title)}</h1>",
             f"<p>対象期間：{report.fiscal_year}年4月1日〜{report.fiscal_year + 1}年3月31日　作成：{e(_made(report.generated_at))}</p>",
             "<p>一宮市業務記録システムの設置及び運用に関する要綱第14条に基づき、運用状況を公表します。"
             "件数のみを記載し、個人を識別できる情報は含みません。</p>"]
    for title, key in (("月別の記録件数", "monthly_recordings"), ("月別の視聴請求", "monthly_requests"),
                       ("月別の外部提供", "monthly_provisions")):
        parts.append(_svg_bars(title, getattr(report.total, key)))
    parts.append(f'<table class="report"><thead><tr><th>区分</th><th>項目</th>{heads}</tr></thead><tbody>')
    for section, item, values in rows(report):
        cells = "".join(f"<td>{v}</td>" for v in values)
        parts.append(f"<tr><td>{e(section)}</td><td>{e(item)}</td>{cells}</tr>")
    parts.append("</tbody></table><h2>監査ログのチェックポイント</h2>"
                 "<p>各装置の監査ログの署名付きチェックポイントです。後から記録が書き換えられていないことを、"
                 "このチェックポイントで確かめられます。</p>")
    for f in report.devices:
        parts.append(f"<h3>{e(f.device)}</h3><pre>{e(f.checkpoint) or '（監査ログがありません）'}</pre>")
    return "\n".join(parts)


def to_html(report: Report) -> str:
    return ("<!doctype html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(report.title)}</title><style>body{{font-family:sans-serif;max-width:60rem;"
            "margin:2rem auto}}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2rem .5rem}"
            "td:nth-child(n+3){text-align:right}pre{white-space:pre-wrap;font-size:.8rem}</style></head><body>"
            + body_html(report) + "</body></html>\n")


def to_pdf(report: Report) -> bytes:
    from firmware.documents.pdf import new_document

    pdf = new_document()
    pdf.add_page()
    pdf.set_font("gothic", size=16)
    pdf.multi_cell(0, 9, report.title, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("gothic", size=10)
    pdf.multi_cell(0, 6, f"対象期間：{report.fiscal_year}年4月1日〜{report.fiscal_year + 1}年3月31日　"
                         f"作成：{_made(report.generated_at)}", new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 6, "一宮市業務記録システムの設置及び運用に関する要綱第14条に基づき、運用状況を公表します。"
                         "件数のみを記載し、個人を識別できる情報は含みません。", new_x="LMARGIN", new_y="NEXT")
    for title, key in (("月別の記録件数", "monthly_recordings"), ("月別の視聴請求", "monthly_requests"),
                       ("月別の外部提供", "monthly_provisions")):
        _pdf_bars(pdf, title, getattr(report.total, key))
    pdf.add_page()
    names = [f.device for f in report.devices] + ["合計"]
    widths = [110] + [min(35, 70 / len(names))] * len(names)
    pdf.set_font("gothic", size=8)
    _pdf_row(pdf, widths, ["項目", *names], header=True)
    current = None
    for section, item, values in rows(report):
        if section != current:  # each section once, as a heading across the table
            current = section
            if pdf.get_y() > 262:
                pdf.add_page()
            pdf.set_fill_color(232, 240, 233)
            pdf.cell(sum(widths), 6, section, border=1, fill=True, new_x="LMARGIN", new_y="NEXT")
        _pdf_row(pdf, widths, [item, *map(str, values)])
    pdf.add_page()
    pdf.set_font("gothic", size=12)
    pdf.cell(0, 8, "監査ログのチェックポイント", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("gothic", size=9)
    pdf.multi_cell(0, 5, "各装置の監査ログの署名付きチェックポイントです。後から記録が書き換えられていないことを、"
                         "このチェックポイントで確かめられます（kiroku audit verify --checkpoint）。",
                   new_x="LMARGIN", new_y="NEXT")
    for f in report.devices:
        pdf.set_font("gothic", size=10)
        pdf.cell(0, 7, f.device, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("gothic", size=7)
        pdf.multi_cell(0, 4, f.checkpoint or "（監査ログがありません）", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_bars(pdf, title: str, values: dict[int, int]) -> None:
    top = max(values.values()) or 1
    pdf.ln(3)
    pdf.set_font("gothic", size=11)
    pdf.cell(0, 7, title, new_x="LMARGIN", new_y="NEXT")
    x0, y0, h = pdf.get_x() + 6, pdf.get_y() + 44, 38.0
    pdf.set_draw_color(0, 0, 0)
    pdf.line(x0 - 2, y0, x0 + 12 * 14, y0)
    pdf.set_font("gothic", size=7)
    for i, m in enumerate(MONTHS):
        bar = h * values[m] / top
        x = x0 + i * 14
        pdf.set_fill_color(46, 125, 50)
        if bar:
            pdf.rect(x, y0 - bar, 9, bar, style="F")
        pdf.text(x + 1, y0 + 4, f"{m}月")
        pdf.text(x + 2, y0 - bar - 1.2, str(values[m]))
    pdf.set_y(y0 + 6)


def _pdf_row(pdf, widths: list[float], cells: list[str], *, header: bool = False) -> None:
    if pdf.get_y() > 270:
        pdf.add_page()
    if header:
        pdf.set_fill_color(230, 230, 230)
    for i, (w, text) in enumerate(zip(widths, cells)):
        pdf.cell(w, 5.5, text, border=1, fill=header, align="L" if i == 0 else "R")
    pdf.ln(5.5)


def write_all(report: Report, out: Path) -> list[Path]:
    from firmware.fsutil import atomic_write, makedirs_durable

    makedirs_durable(out)
    stem = f"kiroku-report-{report.fiscal_year}"
    files = {f"{stem}.pdf": to_pdf(report), f"{stem}.csv": to_csv(report),
             f"{stem}.html": to_html(report).encode("utf-8")}
    paths = []
    for name, data in files.items():
        atomic_write(out / name, data)
        paths.append(out / name)
    return paths
