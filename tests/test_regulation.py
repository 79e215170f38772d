"""The regulation's vocabulary exists once: every value has its words in both languages, and
every list of values a database accepts is the list the code knows."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest

from firmware import regulation
from firmware.regulation import (
    REQUEST_PURPOSES,
    Decision,
    Direction,
    DisclosureDecision,
    DisclosureKind,
    DisclosureStatus,
    Disposition,
    Ground,
    Hearing,
    HoldReason,
    IdentityCheck,
    Opinion,
    ProvisionStatus,
    RecordClass,
    RequestStatus,
    ReturnKind,
)

ROOT = Path(__file__).resolve().parent.parent
# each database's migrations: a device's two, and the hub's (whose registers have the device's shape)
DATABASES = {"device": sorted([*ROOT.glob("webui/migrations/*.sql"), *ROOT.glob("firmware/vault/migrations/*.sql")]),
             "hub": sorted(ROOT.glob("hub/migrations/*.sql"))}
# The hub's own CHECK lists that are not the regulation's terms: what a device is, an alert's
# kind, a locker copy's state.
NOT_TERMS = {("hub", "devices", "kind"), ("hub", "enrollments", "kind"), ("hub", "alerts", "kind"),
             ("hub", "locker", "kind"), ("hub", "locker", "state")}

# (table, column) → the values its CHECK list must be. A CHECK list missing here fails the
# test below: a new one is mapped to its enum when it is written, not found out later.
STORED = {
    ("requests", "purpose"): REQUEST_PURPOSES,
    ("requests", "status"): RequestStatus,
    ("opinions", "opinion"): Opinion,
    ("decisions", "decision"): Decision,
    ("provisions", "ground"): Ground,
    ("provisions", "return_kind"): ReturnKind,
    ("provisions", "status"): ProvisionStatus,
    ("disclosures", "kind"): DisclosureKind,
    ("disclosures", "identity_check"): IdentityCheck,
    ("disclosures", "decision"): DisclosureDecision,
    ("disclosures", "status"): DisclosureStatus,
    ("recordings", "record_class"): RecordClass,
    ("holds", "reason"): HoldReason,
    ("calls", "direction"): Direction,
    ("recordings", "direction"): Direction,  # the hub's: a call's, as published
    ("calls", "external_heard"): Hearing,
    ("calls", "city_heard"): Hearing,
    ("recordings", "external_heard"): Hearing,  # the hub's
    ("recordings", "city_heard"): Hearing,
    ("calls", "disposition"): Disposition,
}

_TABLE = re.compile(r"\b(?:CREATE|ALTER)\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
_CHECK = re.compile(r"CHECK\s*\(\s*(\w+)\s+IN\s*\(([^)]*)\)\s*\)", re.I)


def check_lists() -> list[tuple[str, str, str, list[str]]]:
    """Every ``CHECK (column IN ('a', 'b', …))`` of every migration that stores a term of the
    regulation: (file, table, column, values)."""
    found = []
    for database, paths in DATABASES.items():
        for path in paths:
            sql = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
            for match in _CHECK.finditer(sql):
                tables = _TABLE.findall(sql[:match.start()])
                assert tables, f"{path.name}: a CHECK list outside a table: {match.group(0)}"
                if (database, tables[-1], match.group(1)) not in NOT_TERMS:
                    found.append((f"{database}:{path.name}", tables[-1], match.group(1),
                                  re.findall(r"'([^']*)'", match.group(2))))
    return found


def enums() -> list[type[Enum]]:
    return [v for v in vars(regulation).values()
            if isinstance(v, type) and issubclass(v, Enum) and v.__module__ == regulation.__name__ and len(v)]


@pytest.mark.parametrize("enum", enums(), ids=lambda e: e.__name__)
def test_every_value_has_a_japanese_and_an_english_label(enum):
    for member in enum:
        assert isinstance(member.ja, str) and member.ja.strip(), f"{enum.__name__}.{member.name} has no Japanese label"
        assert isinstance(member.en, str) and member.en.strip(), f"{enum.__name__}.{member.name} has no English label"


def test_every_article_9_ground_names_its_article_for_the_cover_sheet_and_the_report():
    assert [g.number for g in Ground] == [1, 2, 3, 4, 5]
    for g in Ground:
        assert g.basis_ja.startswith(f"第9条第{g.number}号") and g.reference_en.startswith(f"Art. 9({g.number})")
        assert f"第9条第{g.number}号" in g.short_ja


def test_the_check_lists_were_found():
    found = {(table, column) for _file, table, column, _values in check_lists()}
    assert {("provisions", "ground"), ("requests", "purpose"), ("holds", "reason")} <= found


def in_force() -> list[tuple[str, str, str, list[str]]]:
    """The CHECK list each column has now: a later migration that rebuilds a table (to widen
    its list) overrides the earlier one."""
    last = {(file.split(":")[0], table, column): (file, table, column, values)
            for file, table, column, values in check_lists()}
    return list(last.values())


def test_every_check_list_maps_to_an_enum():
    unmapped = [f"{file}: CHECK ({column} IN …) on {table}" for file, table, column, _ in check_lists()
                if (table, column) not in STORED]
    assert not unmapped, ("these map to no enum of firmware.regulation — add its enum (with its labels) and map "
                          f"it in STORED: {unmapped}")


@pytest.mark.parametrize("file, table, column, values", in_force(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_check_list_of_the_databases_is_the_enum_it_stores(file, table, column, values):
    assert (table, column) in STORED
    assert values == [str(v) for v in STORED[table, column]], (
        f"{file}: {table}.{column} accepts {values}; firmware.regulation says {[str(v) for v in STORED[table, column]]}")
