"""The human-readable parts of an export package: the cover sheet (PDF, Japanese) and
README.txt, which walks a recipient through checking the package with standard tools."""

from __future__ import annotations

from firmware.export.errors import CoverSheetFailed
from firmware.export.request import basis_en


def _basis(p: dict) -> str:
    """The basis in Japanese; packages made before ``basis_ja`` existed name an Art. 9 ground."""
    return p.get("basis_ja") or f"第9条第{p['article_9']}号　{p['ground_ja']}"


STEPS = (  # what a recipient types, in order (README.txt and the cover sheet show them)
    "unzip PACKAGE.zip && cd kiroku-export-*",
    "openssl pkey -pubin -in device-key.pem -outform DER | sha256sum",
    "openssl pkeyutl -verify -pubin -inkey device-key.pem -rawin -in manifest.json -sigfile manifest.sig",
    "sha256sum clip.mp4 cover.pdf README.txt device-key.pem",
)


def readme(m: dict) -> str:
    p, c = m["provision"], m["clip"]
    lines = [
        "kiroku export package / 映像記録 提供パッケージ",
        "",
        f"Device / 装置:            {m['device']['id']}",
        f"Recording / 録画:         {m['recording']['id']} (started {m['recording']['started_at']})",
        f"Clip / 提供範囲:           {c['start']} – {c['end']} ({c['duration_s']:.1f} s)",
        f"Approved range / 承認範囲: {m['approved_range']['start']} – {m['approved_range']['end']}",
        f"Clock synchronised / 時刻同期: {'yes / あり' if m['clock']['synchronised'] else 'NO / なし'}",
        f"Ground / 提供の根拠:       {basis_en(p['ground'])} / {_basis(p)}",
        f"Recipient / 提供先:        {p['recipient']}",
        f"Request / 依頼文書:        {p['request_reference'] or '(pending / 後日提出)'} {p['request_date']}",
        f"Approved by / 承認者:      {p['approver']}",
        f"Exported / 作成日時:       {m['exported_at']}",
        "",
        "HOW TO CHECK THIS PACKAGE (standard tools: unzip, openssl 3, sha256sum)",
        "1. Unpack it (if you received PACKAGE.zip.age, first: age -d -o PACKAGE.zip PACKAGE.zip.age",
        "   and type the passphrase the city gave you separately).",
        f"   $ {STEPS[0]}",
        "2. The device key's fingerprint must be the one the city publishes for this device",
        f"   (device {m['device']['id']}): {m['device']['key_sha256']}",
        f"   $ {STEPS[1]}",
        "3. The signature over the manifest must verify (prints 'Signature Verified Successfully'):",
        f"   $ {STEPS[2]}",
        "4. Each file's SHA-256 must equal the one under \"files\" in manifest.json:",
        f"   $ {STEPS[3]}",
        "5. Optional: audit-proof.json shows this export as an entry of the device's audit log",
        "   (kiroku audit check-proof audit-proof.json --vkey device.vkey, or kiroku verify PACKAGE).",
        "",
        "If all of these hold, clip.mp4 is exactly what the device exported, and the manifest",
        "says what it is. If any fails, the package was changed after it left the device.",
        "",
        "kiroku verify PACKAGE  does all of the above in one step.",
        "",
        "This footage is personal information. Use it only for the purpose it was provided for.",
        "本データは個人情報です。提供を受けた目的以外に利用しないでください。",
    ]
    if p["ground"] == "committee":
        lines += ["After deliberation the city will ask for this footage to be returned or erased (Art. 10(2)).",
                  "審議終了後、提供した記録の返却又は消去を求めます（第10条第2項）。"]
    return "\n".join(lines) + "\n"


def sheet(m: dict, pdf=None) -> bytes:
    """The cover sheet: what the package is, why it left, and how to check it (A4, Japanese).
    ``pdf``: a document from ``firmware.documents.pdf.new_document()`` made beforehand."""
    from firmware.documents.pdf import new_document

    p, c = m["provision"], m["clip"]
    pdf = pdf or new_document()
    pdf.add_page()
    pdf.set_font("gothic", size=16)
    pdf.cell(0, 10, "業務記録システム　記録の提供について（送付書）", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("gothic", size=10)
    rows = [
        ("提供先", p["recipient"]),
        ("提供の根拠", _basis(p)),
        ("依頼文書", f"{p['request_reference'] or '（後日提出）'}　{p['request_date']}"),
        ("提供番号", p["number"] or "—"),
        ("承認者（管理責任者）", p["approver"]),
        ("装置", m["device"]["id"]),
        ("録画", f"{m['recording']['id']}（開始 {m['recording']['started_at']}）"),
        ("提供範囲", f"{c['start']} ～ {c['end']}（{c['duration_s']:.1f} 秒）"),
        ("承認範囲", f"{m['approved_range']['start']} ～ {m['approved_range']['end']}"),
        ("時刻同期", "同期済み" if m["clock"]["synchronised"] else "未同期（時刻は参考値）"),
        ("編集", _redactions_ja(m)),
        ("作成日時", m["exported_at"]),
    ]
    for label, value in rows:
        pdf.set_font("gothic", size=10)
        pdf.cell(45, 7, label, border=1)
        pdf.multi_cell(0, 7, str(value), border=1, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("gothic", size=11)
    pdf.cell(0, 7, "改ざんがないことの確認方法", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("gothic", size=9)
    text = [
        "1. 装置の公開鍵の指紋（SHA-256）が、市が公表している次の値と一致すること:",
        f"   {m['device']['key_sha256']}",
        f"   $ {STEPS[1]}",
        "2. manifest.json の署名を検証すること（Signature Verified Successfully と表示される）:",
        f"   $ {STEPS[2]}",
        "3. 各ファイルの SHA-256 が manifest.json の \"files\" の値と一致すること:",
        f"   $ {STEPS[3]}",
        f"   clip.mp4: {c['sha256']}",
        "いずれかが一致しない場合、このパッケージは装置から出た後に変更されています。",
        "詳しい手順は README.txt にあります。kiroku verify PACKAGE で一度に確認できます。",
    ]
    for line in text:
        pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("gothic", size=10)
    notes = ["本データは個人情報を含みます。提供の目的以外に利用せず、複製は必要な範囲に限ってください。"]
    if p["ground"] == "committee":
        notes.append("審議終了後、本記録の返却又は消去を求めます（第10条第2項）。")
    if p["ground"] == "urgent" and not p["request_reference"]:
        notes.append("緊急の提供のため、依頼文書は後日提出を求めます（第11条第2項）。")
    for line in notes:
        pdf.multi_cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _redactions_ja(m: dict) -> str:
    r = m["redactions"]
    parts = []
    if r["mute"]:
        parts.append("音声の消音 " + "、".join(f"{a:g}～{b:g} 秒" for a, b in r["mute"]))
    if r["blur"]:
        parts.append(f"指定範囲のぼかし {len(r['blur'])} 箇所")
    if r["faces"]:
        parts.append("第三者の顔のぼかし（自動検出）")
    return "、".join(parts) if parts else "なし（原記録から切り出したまま）"


class Printer:
    """Makes the cover sheet in a second process, started before the clip is cut.

    Loading the PDF library and parsing the Japanese font takes about a second — a fixed
    cost per package, as long as cutting a few minutes of footage. The second process
    spends it while this one cuts, then waits for the manifest on its stdin and answers
    with the PDF on its stdout. If it cannot be started, the sheet is made here.
    """

    def __init__(self):
        import subprocess
        import sys

        try:
            # -c, not -m: run as __main__, this module would be a second copy of the one the
            # package imports (runpy warns of it on stderr)
            self._child = subprocess.Popen([sys.executable, "-c", "from firmware.export.cover import serve; serve()"],
                                           stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError:
            self._child = None

    def sheet(self, m: dict) -> bytes:
        import json

        if self._child is None:
            return sheet(m)
        out, err = self._child.communicate(json.dumps(m, ensure_ascii=False).encode())
        self._code, self._child = self._child.returncode, None
        if not out.startswith(b"%PDF"):
            why = err.decode(errors="replace").strip()[-500:] or f"the printer process ended with {self._code}"
            raise CoverSheetFailed(f"the cover sheet could not be made: {why}")
        return out

    def __enter__(self) -> "Printer":
        return self

    def __exit__(self, *exc) -> None:
        if self._child is not None:  # the package was given up before its sheet
            self._child.kill()
            self._child.communicate()
            self._child = None


def serve() -> None:
    """The printer process: read a manifest on stdin, write its cover sheet to stdout."""
    import json
    import sys

    from firmware.documents.pdf import new_document

    pdf = new_document()  # the slow part, done while the parent cuts the clip
    m = json.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(sheet(m, pdf))

