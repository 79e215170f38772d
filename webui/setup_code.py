"""The set-up code: what the first-run page asks for, so that only someone at the device can
register its first manager.

Until a manager exists the first-run page answers whoever reaches the web UI, and whoever
submits it first would own the device. The code is shown only where a person at the device
sees it: the console's greeting (the screen, or a serial cable), ``kiroku setup-code`` run
on the device, the web UI's own log, and the terminal of ``make run``. It is made once,
kept in ``<data>/web/setup-code`` (the web UI's user alone reads it), and removed when the
first manager is registered.

Ten characters of Crockford's base 32 (50 bits): no I, L, O or U to misread, and typed in
any case, full-width or not, with or without the hyphen. Wrong codes are slowed, limited per address and
logged like wrong passwords (webui.setup).
"""

from __future__ import annotations

import hmac
import os
import secrets
import sqlite3
import unicodedata
from pathlib import Path

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 10
_READS_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})  # what Crockford's decoding reads them as


def path(data_dir: Path) -> Path:
    return Path(data_dir) / "web" / "setup-code"


def shown(code: str) -> str:
    """``K7M2Q9XF4B`` → ``K7M2Q-9XF4B``: how people read it and type it."""
    return f"{code[:5]}-{code[5:]}"


def normalise(text: str) -> str:
    """What was typed, as the code's characters: full-width letters and digits (typed with a
    Japanese input method on) as ASCII, any dash, long-vowel mark or space dropped."""
    text = unicodedata.normalize("NFKC", text).upper().translate(_READS_AS)
    return "".join(c for c in text if c in ALPHABET)


def has_manager(data_dir: Path) -> bool:
    """Whether anyone is registered in web.db (read-only; no web.db yet means no one)."""
    db = Path(data_dir) / "web" / "web.db"
    if not db.exists():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False  # made, not yet migrated: no one yet
        raise
    finally:
        conn.close()


def pending(data_dir: Path) -> str | None:
    """The code while the device has no manager (made now if there is none), else None."""
    if has_manager(data_dir):
        remove(data_dir)
        return None
    return ensure(data_dir)


def ensure(data_dir: Path) -> str:
    """The code, made now if there is none. The web UI and the console may both get here
    first at boot: whichever links its file in first has made the code; the other reads it."""
    target = path(data_dir)
    code = _read(target)
    if code:
        return code
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    made = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    temp = target.with_name(f".setup-code.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(made + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, target)  # never replaces a code someone may already be reading
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
    code = _read(target)
    if not code:
        raise OSError(f"{target} does not hold a set-up code: remove it and restart the web UI")
    return code


def matches(data_dir: Path, typed: str) -> bool:
    code = _read(path(data_dir))
    return bool(code) and hmac.compare_digest(normalise(typed).encode(), code.encode())


def remove(data_dir: Path) -> None:
    path(data_dir).unlink(missing_ok=True)


def _read(target: Path) -> str | None:
    try:
        text = target.read_text().strip()
    except FileNotFoundError:
        return None
    return text if len(text) == LENGTH and all(c in ALPHABET for c in text) else None
