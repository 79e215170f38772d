"""What an export is asked for (Art. 9–12): why the footage leaves and to whom, and what is
taken out of it before it does (muted spans, blurred regions, faces)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from firmware.export.errors import ExportRefused
from firmware.regulation import Ground

# Footage also leaves on a disclosure decision (Art. 12): not a provision to a third party,
# so not one of Art. 9's grounds, but a basis a package must name just as plainly.
DISCLOSURE = "disclosure"
_DISCLOSURE_JA = "開示請求に対する開示決定（第12条）"
_DISCLOSURE_EN = "Art. 12 a disclosure decision"


def ground_name(text: str) -> str:
    """``committee`` … ``urgent``, or their Art. 9 numbers ``1`` … ``5``; or ``disclosure`` (Art. 12)."""
    if str(text).strip().lower() == DISCLOSURE:
        return DISCLOSURE
    ground = Ground.by_number_or_name(text)
    if ground is None:
        raise ExportRefused(f"unknown ground {str(text).strip().lower()!r}: one of "
                            + ", ".join(f"{g.number} ({g})" for g in Ground))
    return ground.value


def article_9(basis: str) -> int | None:
    """The ground's number in Art. 9; none for a disclosure."""
    return None if basis == DISCLOSURE else Ground(basis).number


def wording_ja(basis: str) -> str:
    """The basis in the regulation's (or the law's) own words."""
    return _DISCLOSURE_JA if basis == DISCLOSURE else Ground(basis).wording_ja


def basis_ja(basis: str) -> str:
    """The package's legal basis as the cover sheet prints it."""
    return _DISCLOSURE_JA if basis == DISCLOSURE else Ground(basis).basis_ja


def basis_en(basis: str) -> str:
    """The same in English, with its article (README.txt)."""
    return _DISCLOSURE_EN if basis == DISCLOSURE else Ground(basis).reference_en


@dataclass
class Region:
    """A rectangle to blur, as fractions of the picture (0–1), optionally only for a time
    span of the recording (seconds from its start)."""

    x: float
    y: float
    w: float
    h: float
    start: float | None = None
    end: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Region":
        """``X,Y,W,H`` (fractions of the picture) with an optional ``@S-E`` (seconds)."""
        box, _, span = text.partition("@")
        try:
            x, y, w, h = (float(v) for v in box.split(","))
            start, end = _span(span) if span else (None, None)
        except ValueError:
            raise ExportRefused(f"blur region {text!r}: write X,Y,W,H as fractions of the picture, e.g. "
                              "0.6,0.1,0.3,0.5, optionally @S-E in seconds") from None
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
            raise ExportRefused(f"blur region {text!r} is not inside the picture (fractions 0–1)")
        return cls(x, y, w, h, start, end)


def _span(text: str) -> tuple[float, float]:
    a, sep, b = text.partition("-")
    if not sep:
        raise ValueError(text)
    start, end = float(a), float(b)
    if not 0 <= start < end:
        raise ValueError(text)
    return start, end


def parse_span(text: str) -> tuple[float, float]:
    """``S-E`` in seconds from the recording's start (for muting)."""
    try:
        return _span(text)
    except ValueError:
        raise ExportRefused(f"time span {text!r}: write S-E in seconds from the recording's start, e.g. 3.5-6") from None


@dataclass
class Redactions:
    mute: list[tuple[float, float]] = field(default_factory=list)  # seconds of the recording
    blur: list[Region] = field(default_factory=list)
    faces: bool = False  # blur every face the bundled detector finds

    @property
    def video(self) -> bool:
        return bool(self.blur) or self.faces

    def describe(self) -> dict:
        return {"mute": [list(m) for m in self.mute], "blur": [asdict(r) for r in self.blur],
                "faces": self.faces}


@dataclass
class Provision:
    """Why the footage leaves, and to whom (the provision register's record)."""

    ground: str
    recipient: str
    approver: str
    exporter: str
    reference: str = ""  # the written request's reference
    request_date: str = ""
    number: str = ""  # the provision's number in the register, when it has one
    note: str = ""
