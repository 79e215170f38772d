"""The device's keys (DESIGN.md §4), as files under ``<data>/keys``.

    device.key                 Ed25519 private key that signs the audit log's checkpoints
    device.pub.pem, device.vkey  its public half (PEM for openssl; signed-note verifier key)
    recovery.recipient         the recovery key's public half; the identity itself was
                               handed over once at set-up and is not kept here
    managers/NAME.recipient    a manager's public key
    managers/NAME.identity.age the manager's identity, wrapped under their passphrase (scrypt,
                               work factor calibrated on this device)
    hub.recipients             once the device is enrolled: the city's managers' public keys as
                               the hub sent them (an age recipients file, ``age -R``)
    day/CLASS/DAY.age          a day's identity for a record class, encrypted to every manager
                               and the recovery key; DAY.recipient beside it is its public half

The recorder creates a day key the first time it seals a segment of that day and class,
writes the private half as a small age file and forgets it: it can never read footage.
Destroying a day's key file is what makes that day's footage unrecoverable everywhere,
including copies wear levelling left on the flash (crypto-shredding).

``keys/.lock`` serialises the two writers of day key files: the recorder creating one, and
a manager being added (which re-encrypts all of them).
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware.fsutil import atomic_write, fsync_dir, makedirs_durable
from firmware.regulation import RecordClass
from firmware.vault import age
from firmware.vault.errors import DayKeyMissing, KeyFileDamaged, KeyStoreError, NotInitialised, WrongPassphrase
from firmware.vault.signed_note import make_vkey

RECORD_CLASSES = tuple(RecordClass)
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# A day key's name: its day, and after the first, the generation (2026-12-07.1): a new one is
# made when whom day keys are sealed to changes during the day (see day_recipient).
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(\.\d{1,3})?")
HUB_RECIPIENTS = "hub.recipients"
_HUB_NAME = "# manager:"


_RESTORE = "restore it from the data folder's backup"
FIXES = {  # what to do about a damaged key file, by its name in keys/
    "device.key": f"{_RESTORE} — a new key would not verify this device's audit log",
    "recovery.recipient": "write the recovery key's public key into it (the age1… line printed at set-up; "
                          "`age-keygen -y RECOVERY-KEY-FILE` prints it again)",
    "manager": f"{_RESTORE}, or remove the manager and add them again (`kiroku keys add-manager`)",
    HUB_RECIPIENTS: "delete it: the uplink fetches the city's managers' keys again from the hub",
    "day": f"{_RESTORE}; until then nothing can be sealed to that day's key",
}


def _generation(name: str) -> int:
    """A day key's generation: 0 for ``2026-12-07``, N for ``2026-12-07.N``."""
    _, _, n = name.partition(".")
    return int(n) if n else 0


def _recipient(path: Path, fix: str) -> age.X25519Recipient:
    try:
        return age.X25519Recipient.parse(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileDamaged(f"{path} is damaged ({exc}): {fix}") from None


def _private_write(path: Path, data: bytes) -> None:
    """A secret file: the device's two processes, and nobody else. On the appliance they run as
    two users sharing the ``kiroku`` group (image-build), and each needs the other's secrets: the
    recorder signs checkpoints with the device key the web UI made at first run, and destroys
    day keys the web UI re-wrapped for a new manager; the web UI signs exports with that key."""
    makedirs_durable(path.parent)
    atomic_write(path, data, mode=0o660)


class KeyStore:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "keys"

    # -- set-up ---------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.root / "device.key").exists() and (self.root / "recovery.recipient").exists()

    def initialise(self, device_name: str, recovery: age.X25519Recipient) -> None:
        """Create the device signing key and record the recovery key's public half.

        The caller generates the recovery identity, hands it over (and makes sure that
        worked) before calling this: the identity itself is never stored here."""
        if self.initialised:
            raise FileExistsError(f"{self.root} already holds this device's keys")
        makedirs_durable(self.root)
        # The group shares it (above). On the appliance it is already 0770 (the units' umask) and
        # set-group-ID, inherited from the data folder, so that what is made inside keeps the group;
        # the bit is never set here: the web UI's unit (RestrictSUIDSGID=) refuses that chmod.
        info = self.root.stat()
        if info.st_mode & 0o777 != 0o770 and info.st_uid == os.geteuid():
            os.chmod(self.root, 0o770)
        signing = Ed25519PrivateKey.generate()
        _private_write(self.root / "device.key", signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        public = signing.public_key()
        atomic_write(self.root / "device.pub.pem", public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)
        atomic_write(self.root / "device.name", device_name.encode(), mode=0o644)
        vkey = make_vkey(self.signer_name, public)
        atomic_write(self.root / "device.vkey", (vkey + "\n").encode(), mode=0o644)
        atomic_write(self.root / "recovery.recipient", f"{recovery}\n".encode(), mode=0o644)

    def uninitialise(self) -> None:
        """Undo :meth:`initialise` when the set-up around it failed (no footage can exist yet)."""
        if self.day_keys("footage") or self.day_keys("call"):
            raise RuntimeError("day keys exist: this device is in use and keeps its keys")
        for name in ("device.key", "device.pub.pem", "device.name", "device.vkey", "recovery.recipient"):
            path = self.root / name
            if path.exists():
                overwrite_and_unlink(path)

    @property
    def signer_name(self) -> str:
        """The name checkpoints are signed under: ``kiroku/<device>``."""
        try:
            device = (self.root / "device.name").read_text().strip()
        except FileNotFoundError:
            raise NotInitialised(f"{self.root}: no device keys — run `kiroku init`") from None
        return f"kiroku/{device}"

    def signing_key(self) -> Ed25519PrivateKey:
        try:
            data = (self.root / "device.key").read_bytes()
        except FileNotFoundError:
            raise NotInitialised(f"{self.root}: no device signing key — run `kiroku init`") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):  # cryptography's reason is a paragraph; the file is the news
            raise KeyFileDamaged(f"{self.root / 'device.key'} is damaged (not a PEM private key): "
                                 f"{FIXES['device.key']}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileDamaged(f"{self.root / 'device.key'} is not an Ed25519 key: {FIXES['device.key']}")
        return key

    def public_key(self) -> Ed25519PublicKey:
        key = serialization.load_pem_public_key((self.root / "device.pub.pem").read_bytes())
        assert isinstance(key, Ed25519PublicKey)
        return key

    # -- managers -------------------------------------------------------------------------
    def managers(self) -> list[str]:
        return sorted(p.name.removesuffix(".recipient") for p in (self.root / "managers").glob("*.recipient"))

    def recipients(self) -> list[age.X25519Recipient]:
        """Everyone a day key is encrypted to: every manager and the recovery key."""
        try:
            found = [_recipient(self.root / "recovery.recipient", FIXES["recovery.recipient"])]
        except FileNotFoundError:
            raise NotInitialised(f"{self.root}: no recovery key — run `kiroku init`") from None
        for name in self.managers():
            found.append(_recipient(self.root / "managers" / f"{name}.recipient", FIXES["manager"]))
        for _, recipient in self.hub_recipients():
            if recipient not in found:  # a manager of this device and of the city: once is enough
                found.append(recipient)
        return found

    def add_manager(self, name: str, passphrase: str, *, unlock: age.X25519Identity | None,
                    work_factor: int | None = None) -> age.X25519Recipient:
        """Give ``name`` a key wrapped under ``passphrase`` and re-encrypt every day key to
        include them. Existing day keys can only be opened by someone who can already open
        them, so ``unlock`` (a manager's or the recovery identity) is needed when any exist."""
        if not _NAME.fullmatch(name):
            raise ValueError("a manager's name is 1–32 of a-z, 0-9, _ and -, starting with a letter or digit")
        if len(passphrase) < 12:
            raise ValueError("a passphrase needs at least 12 characters")
        if name in self.managers():
            raise FileExistsError(f"manager {name!r} already exists")
        identity = age.X25519Identity.generate()
        wf = work_factor or age.calibrate_work_factor()
        wrapped = age.encrypt(f"{identity}\n".encode(), [age.Passphrase(passphrase, work_factor=wf)])
        with self._locked():
            day_files = sorted((self.root / "day").glob("*/*.age"))
            if day_files and unlock is None:
                raise PermissionError("existing day keys must be re-encrypted: unlock with a manager's key or the recovery key")
            opened = [(path, age.decrypt(path.read_bytes(), [unlock])) for path in day_files]
            _private_write(self.root / "managers" / f"{name}.identity.age", wrapped)
            atomic_write(self.root / "managers" / f"{name}.recipient", f"{identity.recipient}\n".encode(), mode=0o644)
            recipients = self.recipients()
            for path, secret in opened:
                _private_write(path, age.encrypt(secret, recipients))
        return identity.recipient

    def rewrap_manager(self, name: str, old: str, new: str, work_factor: int | None = None) -> None:
        """A new passphrase for the same key (a password change)."""
        identity = self.unlock_manager(name, old)
        wf = work_factor or age.calibrate_work_factor()
        _private_write(self.root / "managers" / f"{name}.identity.age",
                       age.encrypt(f"{identity}\n".encode(), [age.Passphrase(new, work_factor=wf)]))

    def remove_manager(self, name: str) -> None:
        """Remove a manager's key. Day keys made before stay encrypted to it: they cannot be
        re-encrypted without opening them, and the key itself is gone from the device."""
        for suffix in (".identity.age", ".recipient"):
            path = self.root / "managers" / f"{name}{suffix}"
            if path.exists():
                overwrite_and_unlink(path)

    def unlock_manager(self, name: str, passphrase: str) -> age.X25519Identity:
        try:
            wrapped = (self.root / "managers" / f"{name}.identity.age").read_bytes()
        except FileNotFoundError:
            raise WrongPassphrase(f"no manager {name!r} on this device") from None
        try:
            return age.X25519Identity.parse(age.decrypt(wrapped, [age.Passphrase(passphrase)]).decode())
        except age.NoIdentityMatched:
            raise WrongPassphrase(f"the passphrase does not unlock {name!r}'s key") from None

    # -- the city's managers, from the hub ---------------------------------------------------
    def hub_recipients(self) -> list[tuple[str, age.X25519Recipient]]:
        """The city's managers' public keys as the hub last sent them (docs/hub.md), with their
        names: none until the device is enrolled."""
        try:
            text = (self.root / HUB_RECIPIENTS).read_text()
        except FileNotFoundError:
            return []
        found, name = [], ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(_HUB_NAME):
                name = line.removeprefix(_HUB_NAME).strip()
            elif line and not line.startswith("#"):
                try:
                    found.append((name, age.X25519Recipient.parse(line)))
                except ValueError as exc:
                    raise KeyFileDamaged(f"{self.root / HUB_RECIPIENTS} is damaged ({exc}): "
                                         f"{FIXES[HUB_RECIPIENTS]}") from None
                name = ""
        return found

    def sealing_problem(self, record_class: str, day: str) -> str | None:
        """What would stop a recording of ``day`` from being sealed and logged, found before the
        sign lights: a damaged device key, recipient or day key, named with its file and the fix."""
        try:
            self.signing_key()
            self.recipients()
            secret_path, public_path = self._day_paths(record_class, self.day_key_name(record_class, day) or day)
            if public_path.exists() != secret_path.exists():
                half = secret_path if secret_path.exists() else public_path
                return f"{half} is there without its other half: {FIXES['day']}"
            if public_path.exists():
                _recipient(public_path, FIXES["day"])
                with secret_path.open("rb") as f:
                    try:
                        age.parse_header(f)
                    except (age.AgeError, ValueError) as exc:
                        return f"{secret_path} is damaged ({exc}): {FIXES['day']}"
        except KeyStoreError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read the keys in {self.root}: {exc} — check the data folder's permissions"
        return None

    def set_hub_recipients(self, managers: list[tuple[str, age.X25519Recipient]], *, record) -> bool:
        """Make ``managers`` (name, key) the city's managers every new day key is sealed to.

        ``record(before, after)`` (lists of (name, ``age1…``)) writes the change to the audit log
        first and raises if it cannot: no change of whom footage is sealed to goes unlogged. Day
        keys made before stay sealed to whom they were (they cannot be re-encrypted unopened).
        Returns whether anything changed; the same list again changes and logs nothing."""
        after = [(name, str(recipient)) for name, recipient in managers]
        with self._locked():  # a day key made meanwhile is sealed to the old list or the new, whole
            before = [(name, str(recipient)) for name, recipient in self.hub_recipients()]
            if sorted(before) == sorted(after):
                return False
            record(before, after)
            lines = ["# The city's managers' public keys, from the hub (docs/hub.md): every new day key is",
                     "# sealed to them too. An age recipients file: age -R keys/hub.recipients"]
            for name, recipient in after:
                lines += [f"{_HUB_NAME} {name}", recipient]
            makedirs_durable(self.root)
            atomic_write(self.root / HUB_RECIPIENTS, ("\n".join(lines) + "\n").encode(), mode=0o644)
        return True

    # -- day keys -------------------------------------------------------------------------
    def _day_paths(self, record_class: str, day: str) -> tuple[Path, Path]:
        if record_class not in RECORD_CLASSES or not _DAY.fullmatch(day):
            raise ValueError(f"bad record class or day: {record_class!r}, {day!r}")
        base = self.root / "day" / record_class
        return base / f"{day}.age", base / f"{day}.recipient"

    def day_key_name(self, record_class: str, day: str) -> str | None:
        """The newest day key of ``day`` (``day`` or ``day.N``), or None while there is none."""
        base = self.root / "day" / record_class
        names = [p.name.removesuffix(".recipient") for p in base.glob(f"{day}*.recipient")]
        names += [p.stem for p in base.glob(f"{day}*.age")]  # half there: found, and refused below
        ours = [n for n in set(names) if n == day or (n.startswith(day + ".") and _DAY.fullmatch(n))]
        return max(ours, key=_generation, default=None)

    def day_recipient(self, record_class: str, day: str) -> tuple[age.X25519Recipient, bool, str]:
        """The public key segments of ``day`` are sealed to now, creating the day key if needed.

        Returns ``(recipient, created, name)``: ``name`` is the key's (``day``, or ``day.N``).
        The private half is written (durably) encrypted to every manager, the city's managers
        and the recovery key before this returns, then forgotten; whom it was sealed to is kept
        beside it (``NAME.to``). When that is no longer whom it must be sealed to — the city's
        managers arrived (an enrollment) or changed, a manager was added or removed, during the
        day — the next segment gets a new key for the day (``day.1``, ``day.2``, …): one already
        made cannot be re-sealed unopened, and footage from then on must open for exactly
        whoever is a manager now.
        """
        wanted = sorted(str(r) for r in self.recipients())
        name = self.day_key_name(record_class, day)
        if name is not None:
            reuse = self._usable(record_class, name, wanted)
            if reuse is not None:
                return reuse, False, name
        with self._locked():
            name = self.day_key_name(record_class, day)
            if name is not None:
                reuse = self._usable(record_class, name, wanted)
                if reuse is not None:
                    return reuse, False, name
                name = f"{day}.{_generation(name) + 1}"
            else:
                name = day
            secret_path, public_path = self._day_paths(record_class, name)
            identity = age.X25519Identity.generate()
            _private_write(secret_path, age.encrypt(f"{identity}\n".encode(), self.recipients()))
            atomic_write(public_path.with_suffix(".to"), ("\n".join(wanted) + "\n").encode(), mode=0o644)
            atomic_write(public_path, f"{identity.recipient}\n".encode(), mode=0o644)
            recipient = identity.recipient
            del identity
        return recipient, True, name

    def _usable(self, record_class: str, name: str, wanted: list[str]) -> age.X25519Recipient | None:
        """The key ``name``'s recipient if new segments may still be sealed to it (whole, and sealed
        to exactly ``wanted``: a manager added must open what follows, one removed must not);
        None when a new generation is needed. Raises DayKeyMissing for a key half there."""
        secret_path, public_path = self._day_paths(record_class, name)
        if public_path.exists() != secret_path.exists():
            raise DayKeyMissing(f"{record_class} key {name} is half there (destroyed?) — not reusing it")
        try:
            sealed_to = public_path.with_suffix(".to").read_text().split()
        except FileNotFoundError:
            sealed_to = wanted  # made before keys said whom they were sealed to: as it was
        if set(wanted) != set(sealed_to):
            return None
        return _recipient(public_path, FIXES["day"])

    def open_day_key(self, record_class: str, day: str, opener: age.X25519Identity) -> age.X25519Identity:
        secret_path, _ = self._day_paths(record_class, day)
        try:
            data = secret_path.read_bytes()
        except FileNotFoundError:
            raise DayKeyMissing(f"no {record_class} key for {day} (destroyed by overwrite, or never made)") from None
        return age.X25519Identity.parse(age.decrypt(data, [opener]).decode())

    def day_keys(self, record_class: str) -> list[str]:
        return sorted(p.stem for p in (self.root / "day" / record_class).glob("*.age"))

    def destroy_day_key(self, record_class: str, day: str) -> bool:
        """Overwrite and remove the day's key file: its footage can never be opened again."""
        secret_path, public_path = self._day_paths(record_class, day)
        with self._locked():
            existed = secret_path.exists()
            if existed:
                overwrite_and_unlink(secret_path)
            for public in (public_path, public_path.with_suffix(".to")):
                if public.exists():
                    public.unlink()
            fsync_dir(public_path.parent)
        return existed

    @contextmanager
    def _locked(self):
        makedirs_durable(self.root)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def overwrite_and_unlink(path: Path, limit: int | None = None) -> None:
    """The regulation's "erase by overwrite": random bytes over the file (or its first
    ``limit`` bytes), then remove it.

    For a sealed segment the first 64 KiB hold the header with its wrapped file key and
    the first chunk: without them no key opens the rest. On flash, wear levelling may
    keep the old blocks anyway; what truly erases footage is destroying its day key
    (and LUKS under it all).
    """
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        remaining = size if limit is None else min(size, limit)
        while remaining > 0:
            n = min(remaining, 1 << 20)
            os.write(fd, os.urandom(n))
            remaining -= n
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)
