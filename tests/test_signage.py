"""Art. 4: the sign at the counter and the public notice, made from the device's settings.
Read back the way a person (or a phone) would: the PDF as text and as an image, its QR code
decoded from the pixels."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest

from kiroku.cli import main
from firmware.config import Config
from firmware.documents import signage
from tests import test_webui
from tests.webui_helpers import first_run

server, app, client = test_webui.server, test_webui.app, test_webui.client

URL = "https://www.city.example.lg.jp/shisei/kiroku.html"


def settings(**public) -> Config:
    return Config().replace(device={"location": "本庁舎1階 市民課 窓口3番"},
                            public={"url": URL, "contact": "0586-28-0000", **public})


def text_of(pdf: bytes) -> str:
    return subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()


def picture_of(pdf: bytes, dpi: int = 150) -> np.ndarray:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-singlefile", "-", f"{folder}/page"], input=pdf,
                       capture_output=True, check=True)
        png = (Path(folder) / "page.png").read_bytes()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("size", ["A4", "A3"])
def test_the_sign_says_what_is_recorded_why_for_how_long_and_its_qr_code_leads_to_the_notice(size):
    pdf = signage.sign_pdf(settings(), size)
    text = text_of(pdf)
    for words in ("この窓口では、録画・録音を行います", "ボタンを押したときだけ", "「録画中」", "本庁舎1階 市民課 窓口3番",
                  "90日間保存", "財務部資産経営課長", "0586-28-0000", "職員に対する不当な圧力"):
        assert words in text, f"the sign does not say {words!r}"
    image = picture_of(pdf)
    height, width = image.shape[:2]
    assert (width > height) and abs(width / height - 297 / 210) < 0.02, "landscape, in the paper's proportions"
    decoded, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert decoded == URL, f"the QR code reads {decoded!r}"


def test_what_the_sign_says_follows_the_mode_and_the_microphone():
    continuous = text_of(signage.sign_pdf(settings().replace(device={"mode": "continuous"})))
    assert "録画・録音を行っています" in continuous and "ボタン" not in continuous
    silent = text_of(signage.sign_pdf(settings().replace(microphone={"enabled": False})))
    assert "録画を行います" in silent and "録音" not in silent.split("\n")[0]
    longer = text_of(signage.sign_pdf(settings().replace(retention={"footage_min_days": 120})))
    assert "120日間保存" in longer
    no_url = signage.sign_pdf(settings(url=""))
    assert cv2.QRCodeDetector().detectAndDecode(picture_of(no_url))[0] == "", "no QR code without a notice page"


def test_a_call_recorders_sign_and_notice_say_that_external_calls_are_recorded_for_a_year():
    config = settings().replace(device={"kind": "calls", "location": "本庁舎 電話交換機室"})
    sign = text_of(signage.sign_pdf(config))
    assert "外線通話は、録音しています" in sign and "365日間保存" in sign and "録画" not in sign
    page = signage.notice_html(config)
    assert "通話録音装置" in page and "双方の電話番号" in page and "本庁舎 電話交換機室" in page
    assert "記録カメラ等" not in page


def test_the_public_notice_lists_the_system_and_escapes_what_was_typed():
    config = settings().replace(device={"location": "<script>alert(1)</script> 窓口"})
    page = signage.notice_html(config)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "記録カメラ等" in page and "画像及び音声" in page and "90日間保存" in page
    assert "窓口" in text_of(signage.notice_pdf(settings())) and "本庁舎1階" in text_of(signage.notice_pdf(settings()))


def test_the_notice_names_the_regulation_as_the_city_enacted_it():
    config = settings().replace(public={"city": "一宮市"})
    assert "（一宮市業務記録システムの設置及び運用に関する要綱第4条第1項）" in signage.notice_html(config)
    assert "一宮市業務記録システムの設置及び運用に関する要綱" in text_of(signage.notice_pdf(config)).replace("\n", "")


def test_making_a_document_does_not_flood_the_log_with_fonttools_glyph_lists(caplog):
    import logging

    with caplog.at_level(logging.INFO):
        signage.notice_pdf(settings())
    assert not [r for r in caplog.records if r.name.startswith("fontTools") and r.levelno < logging.WARNING]


def test_kiroku_notice_writes_the_four_files_and_says_what_is_missing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "kiroku.toml").write_text('[device]\nlocation = "本庁舎1階 市民課"\n')
    assert main(["notice", "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notice.html", "notice.pdf", "sign-a3.pdf",
                                                                    "sign-a4.pdf"]
    assert "本庁舎1階 市民課" in text_of((tmp_path / "out" / "sign-a4.pdf").read_bytes())
    assert "url is empty" in capsys.readouterr().err


def test_the_manager_previews_and_downloads_them_from_the_admin_page(server, app, client):
    first_run(client)
    page = client.get("/admin/settings/notice").get_data(as_text=True)
    assert "業務記録システムの設置について" in page and 'id="no-url"' in page
    sign = client.get("/admin/settings/notice/sign-a3.pdf")
    assert sign.status_code == 200 and sign.data.startswith(b"%PDF")
    assert "この窓口では" in text_of(sign.data)
    assert client.get("/admin/settings/notice/kiroku.toml").status_code == 404
