"""Printable forms (PDF, Japanese): the written viewing request of Art. 8(1)."""

from __future__ import annotations

from firmware.documents.pdf import new_document

PURPOSE_LABELS = {
    "trouble": "第7条第1号　市民等と職員の間のトラブル等の検証",
    "maintenance": "第7条第2号　業務記録システムの保守管理",
    "business": "第7条第4号　その他業務の遂行上特に必要があるとき",
}


def request_form_pdf(req, recording_ids: list[str], iso, reiwa) -> bytes:
    pdf = new_document()
    pdf.add_page()
    pdf.set_font("gothic", size=10)
    pdf.cell(0, 6, f"請求番号　{req['number']}（{reiwa(req['fiscal_year'])}）", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, f"{req['created_at'][:10]}", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("gothic", size=16)
    pdf.cell(0, 10, "業務記録システム　画像等視聴請求書", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("gothic", size=11)
    pdf.cell(0, 7, "管理責任者（財務部資産経営課長）　様", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.cell(0, 7, f"請求者　{req['requester_section']}　{req['requester']}", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.multi_cell(0, 6, "一宮市業務記録システムの設置及び運用に関する要綱第8条の規定により、"
                         "次のとおり画像等の視聴を請求します。", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)

    def row(label: str, value: str, height: float = 8) -> None:
        pdf.set_font("gothic", size=10)
        top = pdf.get_y()
        pdf.multi_cell(42, height, label, border=1, new_x="RIGHT", new_y="TOP")
        pdf.multi_cell(0, height, value, border=1, new_x="LMARGIN", new_y="NEXT")
        if pdf.get_y() < top + height:
            pdf.set_y(top + height)

    row("対応担当課", req["responsible_section"])
    row("対象の記録", "\n".join(recording_ids) or "—")
    row("対象の時間", f"{iso(req['range_start_wall_us'])} から {iso(req['range_end_wall_us'])} まで")
    purposes = "\n".join(("■ " if key == req["purpose"] else "□ ") + label for key, label in PURPOSE_LABELS.items())
    row("利用目的（第7条）", purposes)
    row("請求の理由", req["reason"])
    pdf.ln(6)

    # Signature and seal fields: the requester, and the manager's decision.
    pdf.set_font("gothic", size=10)
    pdf.cell(95, 8, "請求者　署名", border=1)
    pdf.cell(0, 8, "印", border=1, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(95, 18, "", border=1)
    pdf.cell(0, 18, "", border=1, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.cell(0, 8, "管理責任者記入欄", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(60, 10, "□ 承認　　□ 不承認", border=1)
    pdf.cell(70, 10, "決定日　　　年　　月　　日", border=1)
    pdf.cell(0, 10, "印", border=1, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 18, "視聴の範囲・期間・条件：", border=1, new_x="LMARGIN", new_y="NEXT")
    if req["responsible_section"] != req["requester_section"]:
        pdf.ln(4)
        pdf.cell(0, 8, "対応担当課長の意見（第8条第3項）", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(60, 10, "□ 同意　　□ 不同意", border=1)
        pdf.cell(0, 10, "署名　　　　　　　　　　　　　　　　印", border=1, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())

