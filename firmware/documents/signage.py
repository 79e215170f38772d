"""Telling the public (Art. 4): the sign at the counter and the notice for the city's website.

- The **sign** (A4 or A3, landscape, Japanese in large type with an English line): that
  this counter records picture and sound, why, for how long, whom to ask, and a QR code
  to the city's notice page. For an on-demand device it says that recording starts only
  when staff press the button, and that the 「録画中」 sign lights first (Art. 4(2)).
- The **public notice** (HTML for the website, and PDF): every system of this device —
  where it is, what it records, why, how it runs and how long it keeps what it records.

Everything comes from the device's settings (``[device]``, ``[public]``, ``[retention]``);
nothing is typed twice. ``kiroku notice --data DIR --out DIR`` writes them; the admin page
previews and downloads them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from firmware.config import Config

SIZES = {"A4": (297, 210), "A3": (420, 297)}  # landscape, mm


@dataclass(frozen=True)
class System:
    """One system as the notice lists it."""

    name: str
    place: str
    records: str
    purpose: str
    operation: str
    retention: str


def call_lines(config: Config) -> str:
    """Which telephones are recorded (Art. 3: the manager decides), as the public notice says it."""
    c = config.calls
    recorded = "、".join(p.strip() for p in c.recorded_lines.replace("、", ",").split(",") if p.strip())
    excluded = "、".join(p.strip() for p in c.excluded_lines.replace("、", ",").split(",") if p.strip())
    text = f"次の電話番号の外線通話を、自動的に録音します：{recorded}。" if recorded \
        else "市の代表電話等の外線通話を、自動的に録音します。"
    if excluded:
        text += f"次の電話番号の通話は録音しません：{excluded}。"
    return text


def systems(config: Config) -> list[System]:
    """What this device runs: a counter's camera, or the call recorder (``device.kind``)."""
    p, d, r = config.public, config.device, config.retention
    if d.kind == "calls":
        return [System(name="通話録音装置（第2条第1項第1号・第2号）",
                       place=d.location or "（設置場所：未設定）",
                       records="外線通話の音声、日時、通話時間及び双方の電話番号", purpose=p.purpose,
                       operation=call_lines(config),
                       retention=f"{r.call_min_days}日間保存し、その後は上書きにより消去します（第6条第2項）。")]
    records = "画像及び音声" if config.microphone.enabled else "画像"
    if d.mode == "on_demand":
        operation = "職員がボタンを押したときだけ記録します。記録の前に「録画中」の表示が点灯します。"
    else:
        operation = "窓口の業務時間中、常時記録します。"
    return [System(name="記録カメラ等（第2条第1項第3号・第4号）", place=d.location or "（設置場所：未設定）",
                   records=records, purpose=p.purpose, operation=operation,
                   retention=f"{r.footage_min_days}日間保存し、その後は上書きにより消去します（第6条第2項）。")]


TITLE = "業務記録システムの設置について"
CLOSING = ("記録は、要綱第7条から第11条に定める場合を除き、利用せず、第三者に提供しません。"
           "ご自身が記録された画像等の開示は、個人情報保護法に基づき請求できます。")


def intro(config: Config) -> str:
    """The notice's first sentence: who sets the systems up, and why (Art. 4(1))."""
    p = config.public
    return (f"{p.city}は、{p.purpose}、次のとおり業務記録システムを設置しています"
            f"（{regulation_name(config)}第4条第1項）。")


def regulation_name(config: Config) -> str:
    """The regulation's title as the city enacted it: its name first (一宮市業務記録システムの…)."""
    return f"{config.public.city}業務記録システムの設置及び運用に関する要綱"


def manager_line(config: Config) -> str:
    """Whom the public may ask: the city, the manager's title and, when set, the contact."""
    p = config.public
    return f"{p.city} {p.manager}" + (f"（{p.contact}）" if p.contact else "")


def _qr_png(url: str) -> bytes:
    import io

    import segno

    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="png", scale=10, border=2)
    return out.getvalue()


def _pictogram(pdf, x: float, y: float, size: float) -> None:
    """A camera: body, lens and a red recording light, drawn as shapes (no image file)."""
    pdf.set_draw_color(30, 30, 30)
    pdf.set_line_width(size * 0.03)
    pdf.set_fill_color(40, 40, 40)
    pdf.rect(x, y + size * 0.25, size * 0.72, size * 0.5, style="F")
    pdf.polygon([(x + size * 0.72, y + size * 0.4), (x + size, y + size * 0.25), (x + size, y + size * 0.75),
                 (x + size * 0.72, y + size * 0.6)], style="F")
    pdf.set_fill_color(255, 255, 255)
    pdf.ellipse(x + size * 0.2, y + size * 0.34, size * 0.32, size * 0.32, style="F")
    pdf.set_fill_color(200, 16, 46)
    pdf.ellipse(x + size * 0.05, y + size * 0.3, size * 0.09, size * 0.09, style="F")


def sign_pdf(config: Config, size: str = "A4") -> bytes:
    """The counter sign, landscape, in type large enough to read across a counter."""
    from firmware.documents.pdf import new_document

    width, height = SIZES[size]
    k = width / 297  # everything scales with the paper
    p, d = config.public, config.device
    system = systems(config)[0]
    pdf = new_document()
    pdf.set_auto_page_break(False)
    pdf.add_page(orientation="L", format=size)
    margin = 14 * k
    _pictogram(pdf, margin, margin, 46 * k)
    pdf.set_text_color(200, 16, 46)
    pdf.set_font("gothic", size=30 * k)
    pdf.set_xy(margin + 54 * k, margin + 6 * k)
    headline = "この窓口では、録画・録音を行います" if d.mode == "on_demand" else "この窓口では、録画・録音を行っています"
    if not config.microphone.enabled:
        headline = headline.replace("録画・録音", "録画")
    if d.kind == "calls":
        headline = "市役所の外線通話は、録音しています"
    pdf.multi_cell(width - 2 * margin - 54 * k, 14 * k, headline)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("gothic", size=15 * k)
    pdf.set_xy(margin + 54 * k, pdf.get_y() + 2 * k)
    pdf.multi_cell(width - 2 * margin - 54 * k, 8 * k, system.operation)

    text_width = width - 2 * margin - (66 * k if p.url else 0)
    pdf.set_xy(margin, margin + 66 * k)
    rows = [("目的", p.purpose), ("保存期間", system.retention), ("設置場所", system.place),
            ("管理責任者", manager_line(config))]
    for label, value in rows:
        pdf.set_x(margin)
        pdf.set_font("gothic", size=17 * k)
        pdf.cell(42 * k, 10 * k, label)
        pdf.multi_cell(text_width - 42 * k, 10 * k, value, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2.5 * k)
    pdf.set_x(margin)
    pdf.set_font("gothic", size=12 * k)
    pdf.set_text_color(70, 70, 70)
    english = ("This counter records video and sound" if config.microphone.enabled else "This counter records video")
    english += (" only when staff press the button; the sign 「録画中」 lights first." if d.mode == "on_demand"
                else " during opening hours.")
    english += f" Kept {config.retention.footage_min_days} days, then overwritten."
    if d.kind == "calls":
        english = (f"Calls on the city office's external lines are recorded (voice, time, duration and both numbers)."
                   f" Kept {config.retention.call_min_days} days, then overwritten.")
    pdf.multi_cell(text_width, 7 * k, english, new_x="LMARGIN", new_y="NEXT")
    if p.url:
        import io

        qr = 56 * k
        pdf.image(io.BytesIO(_qr_png(p.url)), x=width - margin - qr, y=margin + 64 * k, w=qr, h=qr)
        pdf.set_xy(width - margin - qr - 4 * k, margin + 66 * k + qr)
        pdf.set_font("gothic", size=9 * k)
        pdf.multi_cell(qr + 8 * k, 4.5 * k, "詳しくは市ウェブサイトへ\n" + p.url, align="C")
    return bytes(pdf.output())


def notice_html(config: Config) -> str:
    """The public notice for the city's website: a self-contained HTML page, every value escaped."""
    p = config.public
    e = html.escape
    rows = "\n".join(
        f"<tr><th scope=\"row\">{e(s.name)}</th><td>{e(s.place)}</td><td>{e(s.records)}</td><td>{e(s.purpose)}</td>"
        f"<td>{e(s.operation)}</td><td>{e(s.retention)}</td></tr>" for s in systems(config))
    return f"""<!doctype html>
<html lang="ja">
<head><meta charset="utf-8"><title>{e(p.city)} {TITLE}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.6}}
table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #999;padding:.4rem;vertical-align:top;text-align:left}}
</style></head>
<body>
<h1>{TITLE}</h1>
<p>{e(intro(config))}</p>
<table>
<thead><tr><th>システム</th><th>設置場所</th><th>記録する内容</th><th>利用目的</th><th>稼働方法</th><th>保存期間</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p>{CLOSING}</p>
<p>管理責任者：{e(manager_line(config))}</p>
</body>
</html>
"""


def notice_pdf(config: Config) -> bytes:
    """The public notice as a printable A4 page."""
    from firmware.documents.pdf import new_document

    pdf = new_document()
    pdf.add_page()
    pdf.set_font("gothic", size=16)
    pdf.cell(0, 10, TITLE, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("gothic", size=10.5)
    pdf.multi_cell(0, 6, intro(config), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for s in systems(config):
        pdf.set_font("gothic", size=12)
        pdf.multi_cell(0, 7, s.name, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("gothic", size=10.5)
        for label, value in (("設置場所", s.place), ("記録する内容", s.records), ("利用目的", s.purpose),
                             ("稼働方法", s.operation), ("保存期間", s.retention)):
            pdf.cell(32, 7, label, border=1)
            pdf.multi_cell(0, 7, value, border=1, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    pdf.multi_cell(0, 6, CLOSING, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.multi_cell(0, 6, f"管理責任者：{manager_line(config)}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


FILES = {"sign-a4.pdf": lambda c: sign_pdf(c, "A4"), "sign-a3.pdf": lambda c: sign_pdf(c, "A3"),
         "notice.pdf": notice_pdf, "notice.html": lambda c: notice_html(c).encode()}


def write_all(config: Config, out: Path) -> list[Path]:
    """Write the sign (A4, A3) and the notice (PDF, HTML) into ``out``; returns their paths."""
    from firmware.fsutil import atomic_write, makedirs_durable

    makedirs_durable(out)
    written = []
    for name, make in FILES.items():
        atomic_write(out / name, make(config))
        written.append(out / name)
    return written
