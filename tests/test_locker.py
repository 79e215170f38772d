"""The evidence locker end to end (issue 25, hub/locker.py, firmware/uplink/locker.py): a mark at
a counter, and the marked recording's sealed segments and day key in the city's bucket within
30 s — on the real engines (PostgreSQL, Mosquitto, rclone's S3 server), the real hub and a real
device (``kiroku run``)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.city_helpers import hub_database, within

pytestmark = [pytest.mark.hub, pytest.mark.slow, pytest.mark.xdist_group("city")]


@pytest.fixture
def store(locker_store):
    return locker_store


@pytest.fixture
def city(locker_city):
    return locker_city


def auditor(store):
    """The auditors' read-only credential, on its own listener (what city.json names)."""
    import boto3
    from botocore.config import Config

    key, secret = store.auditor_key
    client = boto3.client("s3", endpoint_url=store.auditor_endpoint, aws_access_key_id=key,
                          aws_secret_access_key=secret, region_name="us-east-1", verify=str(store.ca),
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                        # a plain PUT with its length (rclone takes no chunked upload),
                                        # so that a refused write is refused for being a write
                                        request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required"))
    # without "Expect: 100-continue", which rclone's read-only server answers only after a minute
    client.meta.events.register("before-send.s3.PutObject", _no_expect)
    return client


def _no_expect(request, **_) -> None:  # (a before-send handler that returned anything would be the answer)
    request.headers.pop("Expect", None)


def objects(client, bucket: str, prefix: str) -> dict[str, int]:
    found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["Size"] for o in found}


def age_decrypt(identity_file, data: bytes) -> bytes:
    out = subprocess.run(["age", "-d", "-i", str(identity_file)], input=data, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def test_a_mark_puts_the_recording_sealed_in_the_locker_within_30_s_and_only_the_recovery_key_opens_it(
        city, store, hub_dsn, tmp_path):
    if shutil.which("age") is None:
        pytest.skip("the age tool is not installed (tools/system-packages test installs it)")
    counter = city.add("counter-1", "市民課窓口 1番")
    unmarked = counter.record("sato", segments=1)
    marked = counter.record("sato", mark="大声で威圧された", section="市民課", segments=2)
    with counter._db() as conn:
        segments = {r["path"]: r["sha256"] for r in conn.execute(
            "SELECT path, sha256 FROM segments WHERE recording_id = ?", (marked,))}
        day = conn.execute("SELECT DISTINCT key_day FROM segments WHERE recording_id = ?", (marked,)).fetchone()[0]
    look = auditor(store)
    wanted = {f"{counter.id}/{p}" for p in segments} | {f"{counter.id}/keys/day/footage/{day}.age"}
    there = within(30, lambda: wanted <= objects(look, store.bucket, f"{counter.id}/").keys()
                   and objects(look, store.bucket, f"{counter.id}/"), "the marked recording in the locker")
    assert not any(unmarked in key for key in there), "a recording under no hold is not copied"

    # Sealed as on the card: the recovery key opens the day key, the day key the segment.
    recovery = counter.data.parent / f"{counter.id}-recovery-key.txt"
    day_key = tmp_path / "day-key.txt"
    day_key.write_bytes(age_decrypt(recovery, look.get_object(Bucket=store.bucket,
                                                              Key=f"{counter.id}/keys/day/footage/{day}.age")["Body"].read()))
    for path, sha in segments.items():
        sealed = look.get_object(Bucket=store.bucket, Key=f"{counter.id}/{path}")["Body"].read()
        assert __import__("hashlib").sha256(sealed).hexdigest() == sha, "the copy is the segment the log committed"
        assert sealed.startswith(b"age-encryption.org/v1\n")
        assert age_decrypt(day_key, sealed)[4:8] == b"ftyp"

    # The hub keeps each copy once it found it whole (its next round after the copy arrived).
    def kept():
        with hub_database(hub_dsn) as db:
            rows = db.execute("SELECT key, state, problem FROM locker WHERE device = %s", (counter.id,)).fetchall()
        return {r["key"] for r in rows} == wanted and {r["state"] for r in rows} == {"kept"}

    within(10, kept, "every copy kept at the hub")

    # The auditors' credential reads but cannot change anything.
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        look.delete_object(Bucket=store.bucket, Key=next(iter(wanted)))
    with pytest.raises(ClientError) as refused:
        look.put_object(Bucket=store.bucket, Key=f"{counter.id}/planted.age", Body=b"x")
    assert refused.value.response["Error"]["Code"] != "MissingContentLength", "refused as a write, not as malformed"
    assert wanted <= objects(look, store.bucket, f"{counter.id}/").keys()


def test_the_device_can_put_what_it_is_asked_for_and_nothing_else(city, store, hub_dsn):
    """All a device holds for the bucket is what the hub sends it on its locker topic: one PUT
    address per object (the hub keeps the message it sends, as the broker retains it). With it,
    nothing can be read, listed, deleted or written elsewhere."""
    import threading

    from firmware.uplink.messages import parse_locker

    counter = city.add("counter-1", "市民課窓口 2番")
    sent, done = [], threading.Event()

    def watch():  # every version of the device's list, as the hub hands it to the broker
        with hub_database(hub_dsn) as db:
            while not done.wait(0.05):
                row = db.execute("SELECT rev, payload FROM pushes WHERE device = %s AND topic = 'locker'",
                                 (counter.id,)).fetchone()
                if row and (not sent or sent[-1][0] != row["rev"]):
                    sent.append((row["rev"], row["payload"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        counter.record("sato", mark="確認", section="市民課", segments=1)
        lists = within(30, lambda: [json.loads(p)["uploads"] for _, p in sent if json.loads(p)["uploads"]],
                       "an upload address sent to the device")
    finally:
        done.set()
        watcher.join()
    upload = parse_locker({"v": 1, "rev": 1, "uploads": lists[0]})["uploads"][0]
    context = ssl.create_default_context(cafile=str(store.ca))

    def refused(method: str, url: str, data: bytes | None = None) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), context=context,
                                        timeout=10):
                return 0
        except urllib.error.HTTPError as exc:
            return exc.code
        except urllib.error.URLError:  # closed on before the body was sent: refused too
            return 499

    url = upload["url"]
    assert f"/{store.bucket}/incoming/{counter.id}/" in url, "devices put under incoming/, never where copies are kept"
    assert refused("GET", url) >= 400, "it cannot read"
    assert refused("DELETE", url) >= 400, "it cannot delete"
    assert refused("GET", url.split(f"/{counter.id}/")[0] + "?list-type=2") >= 400, "it cannot list"
    other = url.replace(upload["path"].rsplit("/", 1)[-1], "99999.age")
    assert refused("PUT", other, b"planted") >= 400, "it cannot write another object"
    assert refused("GET", f"{store.endpoint}/{store.bucket}/{counter.id}/{upload['path']}") >= 400, \
        "nor can anyone without a credential"

    # Used again once the copy is kept (a thief with the device's files): the kept copy stands,
    # and what was put is gone at the hub's next round.
    look = auditor(store)
    final = f"{counter.id}/{upload['path']}"
    kept = within(30, lambda: final in objects(look, store.bucket, f"{counter.id}/")
                  and look.get_object(Bucket=store.bucket, Key=final)["Body"].read(), "the copy kept")
    assert refused("PUT", url, b"zeros over the evidence") == 0, "the address itself still works for its hour"
    within(10, lambda: not objects(look, store.bucket, f"incoming/{counter.id}/"), "the replayed upload swept")
    assert look.get_object(Bucket=store.bucket, Key=final)["Body"].read() == kept


def test_a_copy_stays_while_held_and_within_retention_and_goes_after_both_with_the_deletion_audited(
        city, store, hub_dsn):
    from hub import locker

    counter = city.add("counter-1", "市民課窓口 3番")
    marked = counter.record("sato", mark="確認", section="市民課", segments=1)
    look = auditor(store)
    within(30, lambda: any(marked in k for k in objects(look, store.bucket, f"{counter.id}/")), "copied")
    with counter._db() as conn:
        hold = conn.execute("SELECT id FROM holds WHERE recording_id = ? AND released_at IS NULL",
                            (marked,)).fetchone()[0]
        ended = conn.execute("SELECT ended_wall_us FROM recordings WHERE id = ?", (marked,)).fetchone()[0]
    key, secret = store.hub_key
    bucket = locker.Bucket(store.endpoint, store.bucket, key, secret, ca=str(store.ca))
    deletions = []

    def audit(action, **kw):
        deletions.append((action, kw["subject"]))

    def release_at(days_after: float) -> int:
        from hub.db import connect

        db = connect(hub_dsn)
        try:
            return locker.release(db, bucket, audit, 0.0, now_us=ended + int(days_after * locker.DAY_US))
        finally:
            db.close()

    assert release_at(400) == 0, "held: kept, however old"
    counter.control.request("release", hold=hold, by="yamada")  # the incident is closed on the device
    with hub_database(hub_dsn) as db:
        within(20, lambda: db.execute("SELECT holds FROM recordings WHERE id = %s", (marked,)).fetchone()["holds"]
               == 0, "the hold's end known at the hub")
    assert release_at(89) == 0, "no hold, but within the 90 days of Art. 6(2): kept"
    assert any(marked in k for k in objects(look, store.bucket, f"{counter.id}/"))
    gone = release_at(91)
    assert gone >= 2, "the segments and the day key sealing them"
    assert not objects(look, store.bucket, f"{counter.id}/"), "nothing of it is left in the locker"
    assert {a for a, _ in deletions} == {"locker.delete"} and len(deletions) == gone
    with hub_database(hub_dsn) as db:
        states = {r["state"] for r in db.execute("SELECT state FROM locker WHERE device = %s", (counter.id,))}
    assert states == {"deleted"}


@pytest.mark.parametrize("path", [
    "/etc/shadow", "segments/../keys/device.key", "keys/device.key", "keys/day/footage/../../device.key",
    "kiroku.db", "segments/footage/2026-12-07/r/00000.json", "web/web.db", "segments/x.age",
    "keys/day/footage/2026-12-07.age/../../../device.key", "segments/footage/d/r/./00000.age",
])
def test_a_device_copies_nothing_but_its_sealed_segments_and_day_keys_whatever_it_is_asked(path):
    """The list comes from the network: a path outside the sealed files is refused whole."""
    from firmware.uplink import BadMessage
    from firmware.uplink.messages import parse_locker

    upload = {"path": path, "kind": "segment", "sha256": "0" * 64, "size": 1, "url": "https://s3/x", "expires": 1}
    with pytest.raises(BadMessage):
        parse_locker({"v": 1, "rev": 1, "uploads": [upload]})
    good = dict(upload, path="segments/footage/2026-12-07/20261207-091500-000/00000.age")
    assert parse_locker({"v": 1, "rev": 1, "uploads": [good]})["uploads"][0]["path"] == good["path"]
    day_key = dict(upload, path="keys/day/footage/2026-12-07.age", kind="day_key", sha256="")
    assert parse_locker({"v": 1, "rev": 1, "uploads": [day_key]})["uploads"][0]["kind"] == "day_key"
