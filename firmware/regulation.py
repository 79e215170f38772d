"""The regulation's vocabulary, once: every value the records store, with its words.

Each enum below is a list the regulation (or the law it points to) fixes — the Art. 9
grounds, the Art. 7 purposes, the record classes of Art. 6, the roles of Art. 5 and 8, and
the states and outcomes of the registers that follow them. A member is the value as it is
stored (in web.db, kiroku.db, the audit log, a package's manifest) and carries its
Japanese and English label (``.ja``, ``.en``). Everything that spells a value out derives
from here: the web UI's messages (``webui/i18n.py``), the command line's choices, the
export's cover sheet and the annual report; ``tests/test_regulation.py`` holds every
migration's ``CHECK (… IN …)`` list to the enum it stores.

Adding an Art. 9 ground is a member of ``Ground`` with its wording, and a migration that
widens the ``provisions.ground`` check.
"""

from __future__ import annotations

from enum import StrEnum


class Term(StrEnum):
    """A stored value with its labels; ``short_ja`` is the label where a table has room for
    less (the annual report), the Japanese label by default."""

    def __new__(cls, value: str, ja: str, en: str, short_ja: str = ""):
        member = str.__new__(cls, value)
        member._value_ = value
        member.ja, member.en, member.short_ja = ja, en, short_ja or ja
        return member

    @classmethod
    def parse(cls, text: str):
        """The member stored as ``text``, or ``None``: a form's or a file's value checked
        without catching an exception (``in`` on the class refuses a plain string before
        Python 3.12)."""
        return cls._value2member_map_.get(text)


def messages(prefix: str, terms) -> dict[str, tuple[str, str]]:
    """The web UI's message entries for ``terms``: ``prefix + value`` → (Japanese, English)."""
    return {f"{prefix}{term}": (term.ja, term.en) for term in terms}


# -- Art. 9: why footage may go to a third party -----------------------------------------------

class Ground(Term):
    """The five grounds of Art. 9 on which a recording may be provided to a third party."""

    def __new__(cls, value: str, number: int, wording_ja: str, name_ja: str, summary_en: str,
                reference_en: str = ""):
        member = str.__new__(cls, value)
        member._value_ = value
        member.number = number
        member.wording_ja = wording_ja  # the article's own words
        member.ja = f"第{number}号　{wording_ja}"
        member.en = f"{number}. {summary_en}"
        member.short_ja = f"{name_ja}（第9条第{number}号）"
        member.basis_ja = f"第9条第{number}号　{wording_ja}"  # the legal basis a package names
        member.reference_en = f"Art. 9({number}) {reference_en or summary_en}"
        return member

    COMMITTEE = ("committee", 1, "第三者委員会から求めがあったとき", "第三者委員会", "the third-party committee asked")
    LAW = ("law", 2, "法令の定めがあるとき", "法令の定め", "a law requires it")
    INVESTIGATION = ("investigation", 3, "捜査機関から文書による照会があったとき", "捜査機関の照会",
                     "an investigative agency asked in writing")
    CRIME = ("crime", 4, "職員に対する犯罪行為を通報するとき", "職員への犯罪の通報", "reporting a crime against staff")
    URGENT = ("urgent", 5, "市長が緊急かつやむを得ないと認めるとき", "緊急", "urgent, in the mayor's judgement",
              "urgent and unavoidable (the mayor's judgement)")

    @classmethod
    def by_number_or_name(cls, text: str) -> "Ground | None":
        """``committee`` … ``urgent``, or their numbers ``1`` … ``5``."""
        text = str(text).strip().lower()
        return next((g for g in cls if text in (g.value, str(g.number))), None)


# -- Art. 7: what a recording may be used for -------------------------------------------------

class Purpose(Term):
    """The purpose every access states: Art. 7's four, and a disclosure request (Art. 12)."""

    TROUBLE = "trouble", "トラブル等の検証（第7条第1号）", "Verifying a trouble (Art. 7(1))"
    MAINTENANCE = "maintenance", "保守管理（第7条第2号）", "Maintenance (Art. 7(2))"
    PROVISION = "provision", "第三者への提供（第7条第3号）", "Provision to a third party (Art. 7(3))"
    BUSINESS = "business", "業務上特に必要（第7条第4号）", "Special business need (Art. 7(4))"
    DISCLOSURE = "disclosure", "開示請求（第12条）", "Disclosure request (Art. 12)"


# A viewing request (Art. 8) states one of these; a provision and a disclosure have their own
# registers, and their accesses carry their own purpose.
REQUEST_PURPOSES = (Purpose.TROUBLE, Purpose.MAINTENANCE, Purpose.BUSINESS)


# -- Art. 2 and 6: what is recorded, and how long it is kept ------------------------------------

class RecordClass(Term):
    """Art. 6 keeps calls (≥ 1 year) and footage (≥ 3 months) for different times."""

    FOOTAGE = "footage", "画像等", "Footage"
    CALL = "call", "通話記録", "Calls"


class HoldReason(Term):
    """Why a recording is kept past its retention: what keeps it open."""

    INCIDENT = "incident", "トラブル等の記録", "Incident mark"
    REQUEST = "request", "視聴の請求", "Viewing request"
    PROVISION = "provision", "外部提供", "Provision"
    DISCLOSURE = "disclosure", "開示請求", "Disclosure request"


class Direction(Term):
    """A call's direction, seen from the city (Art. 2(1)(2))."""

    INBOUND = "inbound", "着信", "Inbound"
    OUTBOUND = "outbound", "発信", "Outbound"


class Disposition(Term):
    """How a call ended."""

    ANSWERED = "answered", "応答", "Answered"
    BUSY = "busy", "話中", "Busy"
    NO_ANSWER = "no_answer", "応答なし", "No answer"
    CANCELLED = "cancelled", "取消", "Cancelled"
    FAILED = "failed", "不成立", "Failed"


class Hearing(Term):
    """What was heard of one side of an answered call, and why not: a recording that is worse
    than the call says so (a side's silence is never passed off as a quiet speaker, nor noise
    as a voice)."""

    HEARD = "heard", "録音あり", "Heard"
    SILENT = "silent", "音声が届かない", "Nothing sent"
    UNDECODABLE = "undecodable", "復号できない形式", "Undecodable"
    ENCRYPTED = "encrypted", "暗号化（SRTP）", "Encrypted (SRTP)"
    NO_MEDIA_ADDRESS = "no_media_address", "音声の宛先が不明", "No media address"


# -- Art. 5 and 8: who --------------------------------------------------------------------------

class Role(Term):
    MANAGER = "manager", "管理責任者", "Manager"  # Art. 5(1)
    SECTION_HEAD = "section_head", "課長", "Section head"  # Art. 8: requests viewing
    OPERATOR = "operator", "操作担当者", "Operator"  # Art. 5(2): designated per device
    AUDITOR = "auditor", "監査担当", "Auditor"  # reads the audit logs, registers and reports; never footage


# -- Art. 8: viewing requests ---------------------------------------------------------------------

class RequestStatus(Term):
    AWAITING_OPINION = "awaiting_opinion", "意見待ち", "Awaiting opinion"  # Art. 8(3)
    SUBMITTED = "submitted", "決定待ち", "Awaiting decision"
    APPROVED = "approved", "承認", "Approved"
    REJECTED = "rejected", "不承認", "Rejected"
    CLOSED = "closed", "終了", "Closed"
    WITHDRAWN = "withdrawn", "取下げ", "Withdrawn"


class Opinion(Term):
    """The responsible section head's opinion on another section's request (Art. 8(3))."""

    AGREE = "agree", "同意", "Agree"
    DISAGREE = "disagree", "不同意", "Disagree"


class Decision(Term):
    """The manager's decision on a viewing request (Art. 8)."""

    APPROVED = "approved", "承認", "Approved"
    REJECTED = "rejected", "不承認", "Rejected"


# -- Art. 9–11: provisions ------------------------------------------------------------------------

class ProvisionStatus(Term):
    OPEN = "open", "継続中", "Open"
    CLOSED = "closed", "完了", "Closed"


class ReturnKind(Term):
    """What the committee is asked for after its deliberation (Art. 10(2))."""

    RETURN = "return", "返却を求める", "Ask for return"
    ERASURE = "erasure", "消去を求める", "Ask for erasure"


# -- Art. 12: disclosure requests -----------------------------------------------------------------

class DisclosureKind(Term):
    PERSONAL = "personal", "本人開示", "Own personal information (本人開示)"  # APPI
    PUBLIC = "public", "情報公開", "Information disclosure (情報公開)"  # the information-disclosure ordinance


class IdentityCheck(Term):
    """The document that proved a 本人開示 requester's identity (APPI Art. 77(2))."""

    LICENCE = "licence", "運転免許証", "Driving licence"
    MY_NUMBER = "my_number", "マイナンバーカード", "My Number card"
    PASSPORT = "passport", "旅券", "Passport"
    RESIDENCE_CARD = "residence_card", "在留カード", "Residence card"
    OTHER = "other", "その他（備考に記入）", "Other (describe)"


class DisclosureDecision(Term):
    """APPI Art. 82, 79 and 81, and the ordinance's equivalents."""

    FULL = "full", "全部開示", "Full disclosure"
    PARTIAL = "partial", "部分開示", "Partial disclosure"
    REFUSED = "refused", "不開示", "Non-disclosure"
    NOT_HELD = "not_held", "不開示（不存在・消去済み）", "Non-disclosure (not held, e.g. overwritten)", "不存在"
    NO_CONFIRM = "no_confirm", "存否応答拒否", "Neither confirmed nor denied"


class DisclosureStatus(Term):
    OPEN = "open", "処理中", "Open"
    CLOSED = "closed", "完了", "Closed"
