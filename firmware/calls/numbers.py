"""Telephone numbers as the trunk carries them, as E.164, and as a clerk reads or types them.

What is stored is the raw digits exactly as signalled and, where the number is a Japanese
or international subscriber number, its E.164 form. Formatting is for display only and
deliberately modest: Japanese area codes are one to five digits long and a general
library splits some of them wrongly (0422 12 3456, Musashino, came out as 042-212-3456),
so only prefixes whose grouping is fixed are hyphenated and the rest are shown whole.

Prefixes: 184 (withhold the caller's number for this call) and 186 (show it) are taken
off and kept as flags; so is the PBX's outside-line prefix, when it reaches the trunk.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

WITHHELD = "非通知"
_ANONYMOUS = {"anonymous", "unavailable", "unknown", "restricted", "private", "withheld", "非通知"}
# Prefixes whose grouping is fixed nationwide: (national prefix, groups after it)
_GROUPS = (("0120", (3, 3)), ("0800", (3, 4)), ("0570", (3, 3)), ("0990", (3, 3)),
           ("050", (4, 4)), ("060", (4, 4)), ("070", (4, 4)), ("080", (4, 4)), ("090", (4, 4)),
           ("020", (4, 4)), ("03", (4, 4)), ("06", (4, 4)))


@dataclass(frozen=True)
class Number:
    raw: str  # the user part as signalled
    digits: str  # the number after prefixes were taken off ('' when withheld)
    e164: str  # '+81…', '+…', or '' for short codes (110, 119 …) and withheld numbers
    withheld: bool  # 非通知: anonymous caller, a Privacy header, or a 184 prefix
    prefix_184: bool = False
    prefix_186: bool = False
    outside_line: bool = False  # the PBX's outside-line prefix was still on the number

    @property
    def display(self) -> str:
        if self.withheld and not self.digits:
            return WITHHELD
        return display(self.e164 or self.digits)


def parse(raw: str, *, outside_line_prefix: str = "", withheld: bool = False) -> Number:
    """A number from a SIP user part or tel: URI. ``withheld`` comes from the signalling
    (Privacy: id, an anonymous From) when the number itself does not say so."""
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if text.lower() in _ANONYMOUS or text.lower().startswith("anonymous"):
        return Number(raw, "", "", True)
    plus = text.startswith("+")
    digits = re.sub(r"[^0-9*#]", "", text)
    outside = p184 = p186 = False
    if not plus and outside_line_prefix and digits.startswith(outside_line_prefix):
        rest = digits[len(outside_line_prefix):]
        # Only what a number after the outside-line digit can be: a national number (0…, and
        # so 0 + 0… when the prefix is "0"), 184/186 before one, or a three-digit short code.
        # "0112345678" (Sapporo) with prefix "0" is a number, not 0 + "112345678".
        if (rest.startswith("0") and len(rest) in (10, 11)) or (rest[:3] in ("184", "186") and rest[3:4] == "0") \
                or (len(rest) == 3 and rest.startswith("1")):
            digits, outside = rest, True
    if not plus and digits[:3] in ("184", "186") and len(digits) > 6:
        p184, p186 = digits[:3] == "184", digits[:3] == "186"
        digits = digits[3:]
    return Number(raw, digits, _e164(digits, plus), withheld or p184, p184, p186, outside)


def _e164(digits: str, plus: bool) -> str:
    if not digits.isdigit():
        return ""
    if plus:
        return "+" + digits if 8 <= len(digits) <= 15 else ""
    if digits.startswith("010") and len(digits) > 8:  # international call prefix from Japan
        return "+" + digits[3:]
    if digits.startswith("81") and len(digits) in (11, 12):  # E.164 without its '+'
        return "+" + digits
    if digits.startswith("0") and len(digits) in (10, 11):
        return "+81" + digits[1:]
    return ""  # short codes (110, 119, 117) and numbers with a local part only


def national(e164: str) -> str:
    return "0" + e164[3:] if e164.startswith("+81") else e164


def display(number: str) -> str:
    """How the index shows a number: national Japanese numbers hyphenated where the grouping
    is certain, whole otherwise; other countries' numbers in E.164 as they are."""
    if not number:
        return ""
    if number.startswith("+") and not number.startswith("+81"):
        return number
    digits = national(number)
    for prefix, groups in _GROUPS:
        if digits.startswith(prefix) and len(digits) == len(prefix) + sum(groups):
            parts, at = [prefix], len(prefix)
            for n in groups:
                parts.append(digits[at:at + n])
                at += n
            return "-".join(parts)
    return digits


class Lines:
    """Art. 3: which of the city's telephones are recorded — those listed in ``recorded``
    (every line when it is empty) less those in ``excluded``. A line is matched by the
    number the call reached, typed any way (``search_key``), or by the extension or account
    the PBX routed it to."""

    def __init__(self, recorded: str = "", excluded: str = ""):
        self.recorded, self.excluded = self._keys(recorded), self._keys(excluded)

    @staticmethod
    def _keys(text: str) -> frozenset[str]:
        parts = re.split(r"[,、]", unicodedata.normalize("NFKC", text or ""))
        return frozenset(k for k in (search_key(p) for p in parts) if k)

    def records(self, city: Number, reached: str = "") -> bool:
        keys = {k for k in (search_key(city.e164 or city.digits), search_key(reached)) if k}
        if keys & self.excluded:
            return False
        return not self.recorded or bool(keys & self.recorded)

    def __bool__(self) -> bool:
        return bool(self.recorded or self.excluded)


def search_key(text: str) -> str:
    """Digits to look for in stored E.164 numbers, from whatever a clerk types:
    full-width digits, hyphens, spaces, brackets, a leading 0, +81 or 81, a 184 prefix."""
    text = unicodedata.normalize("NFKC", text or "").strip()
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        return digits[2:] if digits.startswith("81") else digits
    if digits[:3] in ("184", "186") and len(digits) > 6:
        digits = digits[3:]
    if digits.startswith("010"):
        return digits[3:]
    if digits.startswith("0"):
        return digits[1:]
    return digits
