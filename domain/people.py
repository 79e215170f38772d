"""People and their roles (Art. 5): the manager (管理責任者) runs the system and designates who
may operate each device (操作担当者, Art. 5(2)); section heads (課長) request viewings for
their section (Art. 8). Sections (課) are what recordings are marked for (Art. 2(6)).

The register is ``sections``, ``users`` and ``operators``; a person's account is disabled,
never deleted, so that every entry of the audit log keeps naming someone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain import accounts
from domain import keys as domain_keys
from domain.errors import NotFound, refuse
from domain.times import now_iso
from firmware.regulation import Role

USERNAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # the key store's rule: a manager's key file bears the name
ROLES = tuple(r.value for r in Role)  # Art. 5, 8; and the auditor
MAX_DISPLAY_NAME = 80
MAX_SECTION_NAME = 40


@dataclass(frozen=True)
class Person:
    """Someone with an account, as a workflow sees them."""

    id: int
    username: str
    display_name: str
    section_id: int | None
    section: str | None
    is_manager: bool
    is_section_head: bool
    is_operator: bool  # designated for the device this register serves (at the hub: none)
    is_auditor: bool = False  # reads logs, the witness, registers and reports; never footage

    @property
    def roles(self) -> set[str]:
        return {role for role, has in (("manager", self.is_manager), ("section_head", self.is_section_head),
                                       ("operator", self.is_operator), ("auditor", self.is_auditor)) if has}


_PERSON = ("SELECT u.id, u.username, u.display_name, u.section_id, s.name AS section, u.is_manager,"
           " u.is_section_head, u.is_auditor, EXISTS (SELECT 1 FROM operators o WHERE o.user_id = u.id AND o.device = ?"
           " AND o.revoked_at IS NULL) AS is_operator FROM users u LEFT JOIN sections s ON s.id = u.section_id")


def load(db, user_id: int, device: str) -> Person | None:
    """The person with an enabled account ``user_id`` (operator or not of ``device``), or None."""
    row = db.one(_PERSON + " WHERE u.id = ? AND u.disabled_at IS NULL", (device, user_id))
    if row is None:
        return None
    return Person(row["id"], row["username"], row["display_name"], row["section_id"], row["section"],
                  bool(row["is_manager"]), bool(row["is_section_head"]), bool(row["is_operator"]),
                  bool(row["is_auditor"]))


def anyone(db) -> bool:
    """Whether any account exists (none: the first-run page is open)."""
    return db.one("SELECT 1 FROM users LIMIT 1") is not None


def sections(db) -> list:
    return db.all("SELECT id, name FROM sections ORDER BY name")


def section_names(db) -> list[str]:
    return [r["name"] for r in sections(db)]


def everyone(db, device: str) -> list:
    """Every account with its roles, whether it operates ``device``, and its lock: a manager's
    key locked after wrong passphrases (``domain.keys``; guesses at log-in lock no account)."""
    return db.all(
        "SELECT u.id, u.username, u.display_name, s.name AS section, u.is_manager, u.is_section_head,"
        " u.is_auditor, u.disabled_at, u.failed_logins,"
        " (SELECT k.locked_until FROM key_guard k WHERE k.name = u.username AND k.locked_until > ?) AS locked_until,"
        " EXISTS (SELECT 1 FROM operators o WHERE o.user_id = u.id AND o.device = ? AND o.revoked_at IS NULL)"
        " AS is_operator FROM users u LEFT JOIN sections s ON s.id = u.section_id ORDER BY u.username",
        (domain_keys.clock(), device))


def as_json(row) -> dict:
    """A row of :func:`everyone` as the API shows it."""
    return {"id": row["id"], "username": row["username"], "display_name": row["display_name"],
            "section": row["section"], "manager": bool(row["is_manager"]), "section_head": bool(row["is_section_head"]),
            "operator": bool(row["is_operator"]), "auditor": bool(row["is_auditor"]), "disabled": row["disabled_at"] is not None,
            "locked_until": row["locked_until"], "failed_logins": row["failed_logins"]}


def describe(ctx, user_id: int) -> dict:
    row = next((p for p in everyone(ctx.db, ctx.device) if p["id"] == user_id), None)
    if row is None:
        raise NotFound(f"person {user_id}")
    return as_json(row)


def account(db, user_id: int):
    """The account row (``id, username, is_manager``), or NotFound."""
    row = db.one("SELECT id, username, is_manager FROM users WHERE id = ?", (user_id,))
    if row is None:
        raise NotFound(f"person {user_id}")
    return row


@dataclass(frozen=True)
class NewPerson:
    """What the manager types to add someone."""

    username: str
    display_name: str
    section_id: str  # as typed: "" for none
    roles: frozenset[str]
    password: str
    your_password: str = ""  # the acting manager's, to add another manager


def add(ctx, new: NewPerson) -> int:
    """Add a person with their roles (and, for an operator, the designation for this device).

    A new manager must be able to open the days already recorded, so the acting manager's
    passphrase (``your_password``, checked like a log-in) opens their key to re-encrypt the
    day keys to the newcomer (``ctx.keys``). Returns the new id."""
    db = ctx.db
    section_ok = not new.section_id or (new.section_id.isascii() and new.section_id.isdigit()
                                        and len(new.section_id) <= 18 and db.one(
        "SELECT 1 FROM sections WHERE id = ?", (int(new.section_id),)) is not None)
    roles = set(new.roles)
    if not USERNAME.fullmatch(new.username):
        refuse("user.bad_username")
    if not section_ok:
        refuse("user.unknown_section")
    if not new.display_name or len(new.display_name) > MAX_DISPLAY_NAME:
        refuse("form.missing")
    if "section_head" in roles and not new.section_id:
        refuse("user.section_head_needs_section")
    if not roles <= set(ROLES) or ("operator" in roles and not ctx.device):
        refuse("user.unknown_role")  # at the hub, operators are designated per device instead
    if not roles and ctx.device:
        refuse("user.role_needed")  # a person with no role could do nothing but log in (at the hub: designate them)
    problem = accounts.password_problem(new.password)
    if problem:
        refuse(problem)
    if db.one("SELECT 1 FROM users WHERE username = ?", (new.username,)):
        refuse("user.exists")
    keys = ctx.keys
    unlock = None
    if "manager" in roles:
        if not accounts.check_own_password(ctx, new.your_password):
            refuse("user.your_password_needed")
        unlock = domain_keys.unlock_own(ctx, new.your_password, subject=new.username,
                                        refusal="user.your_password_needed")
    if "manager" in roles:
        keys.add_manager(new.username, new.password, unlock=unlock)
    try:
        with db.transaction():
            user_id = db.insert(
                "INSERT INTO users (username, display_name, password_hash, section_id, is_manager, is_section_head,"
                " is_auditor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (new.username, new.display_name, accounts.hash_password(new.password),
                 int(new.section_id) if new.section_id else None, int("manager" in roles),
                 int("section_head" in roles), int("auditor" in roles), now_iso()))
            if "operator" in roles:
                _designate(ctx, user_id)
            # logged once written, before the commit: nothing in the log that is not in the register
            ctx.log("user.add", subject=new.username, detail={"roles": sorted(roles)})
            if "operator" in roles:
                ctx.log("operator.designate", subject=new.username, detail={"device": ctx.device})
    except Exception:
        if "manager" in roles:
            keys.remove_manager(new.username)  # no key without its person
        raise
    return user_id


def _designate(ctx, user_id: int, device: str | None = None) -> None:
    ctx.db.execute("INSERT INTO operators (user_id, device, designated_by, designated_at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (user_id, device) DO UPDATE SET revoked_at = NULL,"
                   " designated_by = excluded.designated_by, designated_at = excluded.designated_at",
                   (user_id, device or ctx.device, ctx.actor.id, now_iso()))


def set_operator(ctx, user_id: int, designate: bool, device: str | None = None) -> None:
    """Designate someone as an operator of a device (this one, or ``device`` at the hub), or
    revoke it (Art. 5(2))."""
    person = account(ctx.db, user_id)
    device = device or ctx.device
    with ctx.db.transaction():  # logged once written, before the commit
        if designate:
            _designate(ctx, user_id, device)
            ctx.log("operator.designate", subject=person["username"], detail={"device": device})
        else:
            ctx.db.execute("UPDATE operators SET revoked_at = ? WHERE user_id = ? AND device = ?"
                           " AND revoked_at IS NULL", (now_iso(), user_id, device))
            ctx.log("operator.revoke", subject=person["username"], detail={"device": device})


def designations(db) -> dict[int, set[str]]:
    """Who operates which device now: user id → device ids."""
    found: dict[int, set[str]] = {}
    for row in db.all("SELECT user_id, device FROM operators WHERE revoked_at IS NULL"):
        found.setdefault(row["user_id"], set()).add(row["device"])
    return found


def operators_of(db, device: str) -> list:
    """The enabled accounts designated for ``device``, with what signing on there needs."""
    return db.all("SELECT u.username, u.display_name, s.name AS section, u.password_hash FROM operators o"
                  " JOIN users u ON u.id = o.user_id LEFT JOIN sections s ON s.id = u.section_id"
                  " WHERE o.device = ? AND o.revoked_at IS NULL AND u.disabled_at IS NULL ORDER BY u.username",
                  (device,))


def disable(ctx, user_id: int) -> list[str]:
    """Disable an account; returns its open sessions, which the caller ends at once."""
    person = account(ctx.db, user_id)
    if person["id"] == ctx.actor.id:
        refuse("user.cannot_disable_self", 409)
    with ctx.db.transaction():
        ctx.db.execute("UPDATE users SET disabled_at = ? WHERE id = ?", (now_iso(), user_id))
        ctx.log("user.disable", subject=person["username"])
        return [r["id"] for r in ctx.db.all("SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL",
                                            (user_id,))]


def unlock_account(ctx, user_id: int) -> None:
    """Lift the lock of another manager's key (wrong passphrases), having made sure it is them
    who asks: never one's own, or whoever guesses in a manager's session could lift it."""
    person = account(ctx.db, user_id)
    if user_id == ctx.actor.id:
        refuse("people.unlock_own", 403)
    with ctx.db.transaction():
        ctx.db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (user_id,))
        ctx.db.execute("DELETE FROM key_guard WHERE name = ?", (person["username"],))
        ctx.log("user.unlock", subject=person["username"], detail={"key": True})


def add_section(ctx, name: str) -> int:
    """Add a section (課): section heads belong to one, and recordings are marked for one."""
    if not name or len(name) > MAX_SECTION_NAME:
        refuse("form.missing")
    if ctx.db.one("SELECT 1 FROM sections WHERE name = ?", (name,)):
        refuse("section.exists", 409)
    with ctx.db.transaction():
        section_id = ctx.db.insert("INSERT INTO sections (name, created_at) VALUES (?, ?)", (name, now_iso()))
        ctx.log("section.add", subject=name)
    return section_id
