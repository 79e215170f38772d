"""The real servers for the hub's tests, started once per test session (per worker): a private
PostgreSQL cluster, a Mosquitto broker and an S3 store (``kiroku.engines``). Each test gets a
database of its own; device ids, client ids and object keys are each test's own, so tests sharing
the broker or the bucket do not meet."""

from __future__ import annotations

import secrets
import shutil

import pytest

from kiroku.engines import engine_root


def _skip_unless(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not any(
        __import__("glob").glob(f"/usr/lib/postgresql/*/bin/{p}"))]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: tools/system-packages test installs them")


@pytest.fixture(scope="session")
def engines_dir():
    root = engine_root(prefix="kiroku-test-engines-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(engines_dir):
    _skip_unless("initdb", "postgres")
    from kiroku.engines.postgres import Postgres

    server = Postgres(engines_dir / "pg").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mosquitto(engines_dir):
    _skip_unless("mosquitto", "mosquitto_ctrl")
    from kiroku.engines.mosquitto import Mosquitto

    broker = Mosquitto(engines_dir / "mqtt").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def s3(engines_dir):
    """The evidence locker's S3 store (rclone serve s3: the hub's key read-write, the auditor's
    read-only). Tests share its bucket: each keeps to keys of its own."""
    from kiroku.engines import EngineError
    from kiroku.engines.s3 import S3Store, rclone

    try:
        rclone()
    except EngineError as e:
        pytest.skip(str(e))
    store = S3Store(engines_dir / "s3").start()
    yield store
    store.stop()


@pytest.fixture
def hub_dsn(postgres):
    """A new, empty database on the session's cluster, migrated to the hub's schema."""
    import psycopg

    from hub.db import migrate

    name = f"t_{secrets.token_hex(6)}"
    admin = postgres.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    migrate(dsn)
    yield dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def short_tmp():
    """A folder of the test's own with a short path: a device's data folder holds its control
    socket, whose path a Unix socket limits to 107 bytes — pytest-xdist's tmp_path
    (/tmp/pytest-of-root/pytest-N/popen-gwN/test_…/city/devices/ID/control.sock) is too long."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)



@pytest.fixture
def locker_store(mosquitto):
    """An S3 store of the test's own for a city's evidence locker, its certificate from the city's
    CA (the broker's), which devices trust."""
    from kiroku.engines.s3 import S3Store

    root = engine_root(prefix="kiroku-test-s3-")
    s3 = S3Store(root / "s3", ca=mosquitto._ca).start()
    yield s3
    s3.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def locker_city(short_tmp, postgres, hub_dsn, mosquitto, locker_store):
    """A small city (``tests.city_helpers.SmallCity``) whose hub keeps an evidence locker."""
    from tests.city_helpers import SmallCity, postgres_of

    with SmallCity(short_tmp / "city", postgres_of(postgres, hub_dsn), mosquitto, s3=locker_store) as c:
        yield c
