"""What every printable document kiroku makes shares: a Japanese font fpdf2 can embed.

The font is IPAex Gothic (Debian's ``fonts-ipaexfont-gothic``), a TrueType font fpdf2
embeds as a subset, so a PDF shows the same on any machine that opens it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from firmware.documents.errors import FontMissing

FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf"),
    Path("/usr/share/fonts/truetype/ipaexfont-gothic/ipaexg.ttf"),
    Path("/usr/share/fonts/truetype/fonts-japanese-gothic.ttf"),
)


def japanese_font() -> Path:
    for path in FONT_CANDIDATES:
        if path.exists():
            return path
    raise FontMissing("no Japanese font for printable documents — apt install fonts-ipaexfont-gothic")


def new_document():
    """An A4 fpdf2 document with the Japanese font registered as ``gothic``."""
    from fpdf import FPDF

    # fontTools says, at INFO, every glyph list of every subset it makes: dozens of lines per
    # document, which buried `make run`'s URL and set-up code. Its warnings still show.
    logging.getLogger("fontTools").setLevel(logging.WARNING)

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_font("gothic", "", str(japanese_font()))
    return pdf
