"""The hub's configuration (``kiroku hub --config FILE``): TOML, validated once, unknown keys
refused with their location — the device's rules (``firmware.config``).

    [hub]
    folder = "/var/lib/kiroku-hub"      # its signing key, session key, scans
    city = "一宮市"

    [database]
    dsn_file = "/etc/kiroku-hub/database.dsn"   # postgresql://kiroku:…@127.0.0.1:5432/kiroku

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca = "/etc/kiroku-hub/ca.pem"        # the CA devices trust the broker by (sent at enrollment)
    public_host = "hub.city.example"     # the broker's address as devices reach it
    admin = "kiroku-admin"
    admin_password_file = "/etc/kiroku-hub/broker-admin"
    hub_password_file = "/etc/kiroku-hub/broker-hub"

    [web]
    host = "0.0.0.0"
    port = 8443
    https = true
    certificate = "/etc/kiroku-hub/web.pem"
    key = "/etc/kiroku-hub/web.key"
    hostnames = "hub.city.example"

    [locker]                             # the evidence locker (docs/hub.md); leave out for none
    endpoint = "https://s3.city.example"
    bucket = "kiroku-locker"
    key_file = "/etc/kiroku-hub/locker-key"   # the access key's id, then its secret, on two lines
    ca = ""                              # a CA certificate to trust it by ('' = the system's)

Secrets are in files of their own (readable by the hub's account only), never in this one.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from firmware.config import ConfigError, sections_from_dict, setting


@dataclass(frozen=True)
class HubSection:
    folder: str = setting("/var/lib/kiroku-hub", doc="the hub's own files: its signing key, session key, scans")
    city: str = setting("一宮市", doc="the city, as documents name it")


@dataclass(frozen=True)
class DatabaseSection:
    dsn_file: str = setting("", doc="a file holding the PostgreSQL connection string")


@dataclass(frozen=True)
class BrokerSection:
    host: str = setting("127.0.0.1")
    port: int = setting(8883, lo=1, hi=65535)
    ca: str = setting("", doc="the CA certificate devices trust the broker by")
    public_host: str = setting("", doc="the broker's address as devices reach it ('' = host)")
    public_port: int = setting(0, lo=0, hi=65535, doc="its port as devices reach it (0 = port)")
    admin: str = setting("kiroku-admin", doc="the dynamic-security administrator")
    admin_password_file: str = setting("")
    hub_password_file: str = setting("")


@dataclass(frozen=True)
class WebSection:
    host: str = setting("127.0.0.1")
    port: int = setting(8443, lo=1, hi=65535)
    https: bool = setting(True)
    certificate: str = setting("")
    key: str = setting("")
    hostnames: str = setting("", doc="names the hub answers to, space-separated, besides addresses")


@dataclass(frozen=True)
class LockerSection:
    endpoint: str = setting("", doc="the S3-compatible store's address ('' = no evidence locker)")
    bucket: str = setting("kiroku-locker", pattern=r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
    region: str = setting("us-east-1")
    key_file: str = setting("", doc="a file: the access key's id on its first line, its secret on the second")
    ca: str = setting("", doc="a CA certificate to trust the store by ('' = the system's)")
    url_lifetime: int = setting(3600, lo=60, hi=7 * 86400, doc="seconds a device's upload address stays good")


@dataclass(frozen=True)
class HubConfig:
    hub: HubSection = field(default_factory=HubSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    web: WebSection = field(default_factory=WebSection)
    locker: LockerSection = field(default_factory=LockerSection)

    @property
    def folder(self) -> Path:
        return Path(self.hub.folder)

    def secret(self, path: str, what: str) -> str:
        """A secret kept in a file of its own (``what`` names it in the error)."""
        try:
            return Path(path).read_text().strip()
        except (OSError, TypeError) as exc:
            raise ConfigError(f"{what}: cannot read {path or '(not set)'} ({exc})") from None

    @property
    def dsn(self) -> str:
        return self.secret(self.database.dsn_file, "database.dsn_file")

    def locker_key(self) -> tuple[str, str]:
        lines = self.secret(self.locker.key_file, "locker.key_file").splitlines()
        if len(lines) != 2 or not all(line.strip() for line in lines):
            raise ConfigError(f"locker.key_file: {self.locker.key_file} must hold two lines: the access key's id,"
                              " then its secret")
        return lines[0].strip(), lines[1].strip()


def load(path: Path | str) -> HubConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    return sections_from_dict(HubConfig, data, source=str(path))
