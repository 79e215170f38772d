"""The evidence locker: what each device holds under a hold, copied, still sealed, to the city's
S3-compatible bucket, so that a device that is off, stolen or burnt does not stop a case
(docs/hub.md, "The evidence locker").

Who may do what:

- The hub alone holds a credential for the bucket. A device gets none: for each object the hub
  wants from it, the hub sends it (on its retained ``locker`` topic, ``hub.pushes``) a presigned
  PUT URL for that one key under ``incoming/``, valid for ``url_lifetime`` seconds. With it the
  device can write that object and nothing else — not read, list or delete, not write another
  key (S3's signature covers the method and the key). The hub checks what arrives there and
  moves it (a server-side copy) to ``DEVICE/PATH``, for which no address is ever issued: a thief
  who replays an address with the device's files can put bytes under ``incoming/``, which the
  hub deletes at its next round, never over a kept copy.
- What the hub wants is decided from what it has witnessed (``hub.consumer``): every segment a
  device's log committed (``segment.sealed``: path, size, SHA-256) of a recording under a
  hold — one its device reports (an incident mark) or one the hub placed (a request, provision
  or disclosure filed at the hub, ``hub.evidence``) — and the sealed day key that opens it. A copy is kept (``kept``) only
  once its SHA-256 is the one the log committed; one that differs is said (an alert) and asked
  for again.
- The bucket never holds anything readable without a manager's passphrase or the recovery key:
  the segments are age files sealed to their day key, the day keys age files sealed to the
  managers and the recovery key — exactly the device's own files.
- A copy goes when its recording has no open hold and its minimum retention (Art. 6(2)) has
  passed; the deletion is in the hub's audit log. A day key goes with the last segment of its
  day that was kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass

from firmware.uplink.messages import locker_path_ok
from hub import pushes
from hub.consumer import alert
from hub.db import connect

log = logging.getLogger(__name__)

TOPIC = "locker"
DAY_US = 86_400 * 1_000_000
MIN_DAYS = {"footage": 90, "call": 365}  # Art. 6(2), as firmware.config.RetentionConfig's floors
MAX_UPLOADS = 200  # objects asked of one device at a time (the rest when these are kept)


# A recording is held while its device says so (an incident mark, a device's own request), or
# while the hub holds it (a request, provision or disclosure filed at the hub: ``holds``).
HELD = ("(r.holds > 0 OR EXISTS (SELECT 1 FROM holds h WHERE h.device = r.device AND h.recording_id = r.id"
        " AND h.released_at IS NULL))")
INCOMING = "incoming"  # where devices upload; a copy is moved out once checked


def object_key(device: str, path: str) -> str:
    """Where a checked copy is kept. No device is ever given an address for it."""
    return f"{device}/{path}"


def upload_key(device: str, path: str) -> str:
    """Where the device puts it (its presigned URL's key): checked there, then moved."""
    return f"{INCOMING}/{device}/{path}"


def day_key_path(record_class: str, day: str) -> str:
    return f"keys/day/{record_class}/{day}.age"


class Bucket:
    """The bucket, as the hub uses it (boto3): presign a device's PUT, read a copy's hash, delete."""

    def __init__(self, endpoint: str, bucket: str, key: str, secret: str, *, ca: str = "", region: str = "us-east-1"):
        import boto3
        from botocore.config import Config

        self.endpoint, self.name = endpoint, bucket
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                                   region_name=region, verify=ca or True,
                                   config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                                 retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30))

    def put_url(self, key: str, lifetime: int) -> str:
        return self.client.generate_presigned_url("put_object", Params={"Bucket": self.name, "Key": key},
                                                  ExpiresIn=lifetime)

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix``: key → size."""
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def move(self, source: str, target: str) -> None:
        """A server-side copy, then the source deleted: the bytes never pass through the hub again."""
        self.client.copy_object(Bucket=self.name, Key=target, CopySource={"Bucket": self.name, "Key": source})
        self.delete(source)

    def read(self, key: str) -> bytes:
        """A kept copy's bytes (still sealed): what the hub plays and exports from."""
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def sha256(self, key: str) -> str:
        body = self.client.get_object(Bucket=self.name, Key=key)["Body"]
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(2**16), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        """Gone, every version of it: on a versioned bucket (Object Lock needs one) a plain delete
        only hides the object behind a marker. A version a lock still protects makes it fail:
        the row stays as it was, and the next round tries again."""
        from botocore.exceptions import ClientError

        try:
            versions = self.client.list_object_versions(Bucket=self.name, Prefix=key)
        except ClientError:  # a store without versions (rclone's): the object is all there is
            versions = {}
        found = [v for kind in ("Versions", "DeleteMarkers") for v in versions.get(kind, []) if v["Key"] == key]
        for v in found:
            if v.get("VersionId") not in (None, "null"):
                self.client.delete_object(Bucket=self.name, Key=key, VersionId=v["VersionId"])
        self.client.delete_object(Bucket=self.name, Key=key)


@dataclass
class Round:
    wanted: int = 0
    kept: int = 0
    deleted: int = 0
    staged: int = 0


def want(db, now: float) -> int:
    """Rows for what should be in the locker and is not yet asked for: every committed segment of
    a held recording, and its day key. Returns how many were added."""
    added = 0
    for row in db.all(
            "SELECT l.device, l.subject, l.detail FROM recordings r"
            " JOIN devices d ON d.id = r.device"
            " JOIN device_log l ON l.device = r.device AND l.action = 'segment.sealed'"
            "  AND (l.detail::jsonb ->> 'recording') = r.id"
            " WHERE d.removed_at IS NULL AND " + HELD +
            " AND NOT EXISTS (SELECT 1 FROM locker k WHERE k.device = l.device AND k.path = l.subject"
            "                 AND k.state <> 'deleted')"):
        detail = json.loads(row["detail"])
        path, cls, day = detail.get("path") or row["subject"], detail.get("class", "footage"), detail.get("day", "")
        if not locker_path_ok(path) or not day:
            log.warning("locker: %s committed a segment at %r, which is not one to copy", row["device"], path)
            continue
        for key_path, kind, sha, size, recording in (
                (path, "segment", detail.get("sha256", ""), int(detail.get("size") or 0), detail.get("recording", "")),
                (day_key_path(cls, day), "day_key", "", 0, "")):
            added += db.execute(
                "INSERT INTO locker (device, key, path, kind, recording_id, record_class, day, sha256, size, state,"
                " wanted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'wanted', ?)"
                " ON CONFLICT (device, key) DO UPDATE SET state = 'wanted', wanted_at = excluded.wanted_at,"
                " deleted_at = NULL, kept_at = NULL, url = '', url_expires = NULL"
                " WHERE locker.state = 'deleted'",
                (row["device"], object_key(row["device"], key_path), key_path, kind, recording, cls, day, sha, size,
                 now)).rowcount
    return added


def stage(db, bucket: Bucket, now: float, lifetime: int) -> int:
    """Each device's ``locker`` topic: the objects still wanted of it, each with a PUT URL that
    is fresh for at least half its lifetime. Returns how many devices' lists changed."""
    lists: dict[str, list] = {row["id"]: [] for row in db.all("SELECT id FROM devices WHERE removed_at IS NULL")}
    for row in db.all("SELECT device, key, path, kind, sha256, size, url, url_expires FROM locker"
                      " WHERE state = 'wanted' ORDER BY device, problem <> '', wanted_at, key"):
        if row["device"] not in lists or len(lists[row["device"]]) >= MAX_UPLOADS:
            continue
        url, expires = row["url"], row["url_expires"]
        if not url or expires is None or expires - now < lifetime / 2:
            url, expires = bucket.put_url(upload_key(row["device"], row["path"]), lifetime), now + lifetime
            db.execute("UPDATE locker SET url = ?, url_expires = ? WHERE device = ? AND key = ?",
                       (url, expires, row["device"], row["key"]))
        lists[row["device"]].append({"path": row["path"], "kind": row["kind"], "sha256": row["sha256"],
                                     "size": row["size"], "url": url, "expires": round(expires)})
    return pushes.stage_many(db, TOPIC, {device: {"uploads": uploads} for device, uploads in lists.items()})


def check_copies(db, bucket: Bucket, now: float) -> int:
    """Copies that arrived: kept once whole (a segment's SHA-256 the log's), moved from where the
    device put them to where no device may write; said and asked for again when not whole.
    Returns how many were kept."""
    kept = 0
    for device in [r["device"] for r in db.all(
            "SELECT DISTINCT k.device FROM locker k JOIN devices d ON d.id = k.device"
            " WHERE k.state = 'wanted' AND d.removed_at IS NULL")]:
        there = bucket.sizes(f"{INCOMING}/{device}/")
        for row in db.all("SELECT key, path, kind, sha256, size, problem FROM locker"
                          " WHERE device = ? AND state = 'wanted'", (device,)):
            incoming = upload_key(device, row["path"])
            if incoming not in there:
                continue
            try:
                actual = bucket.sha256(incoming)
                if row["kind"] == "segment" and actual != row["sha256"]:
                    problem = (f"the copy of {row['key']} is not the segment the device's log committed (SHA-256"
                               f" {actual[:16]}…, not {row['sha256'][:16]}…): asked for again")
                    bucket.delete(incoming)  # not kept, and not read again
                    if problem != row["problem"]:
                        log.error("locker: %s", problem)
                        alert(db, device, "locker", True, problem, now)
                    db.execute("UPDATE locker SET problem = ?, url = '', url_expires = NULL"
                               " WHERE device = ? AND key = ?", (problem, device, row["key"]))
                    continue
                bucket.move(incoming, row["key"])
            except Exception as exc:  # this object only: the others go on, it is tried again next round
                log.warning("locker: cannot check %s: %s", incoming, exc)
                continue
            db.execute("UPDATE locker SET state = 'kept', kept_at = ?, sha256 = ?, size = ?, problem = '', url = '',"
                       " url_expires = NULL WHERE device = ? AND key = ?",
                       (now, actual, there[incoming], device, row["key"]))
            kept += 1
        if not db.one("SELECT 1 FROM locker WHERE device = ? AND problem <> '' AND state = 'wanted'", (device,)):
            alert(db, device, "locker", False, "", now)
    return kept


def sweep_incoming(db, bucket: Bucket) -> int:
    """Uploads nothing waits for — an address used again after its copy was kept (a thief with
    the device's files, say), or a copy no longer wanted — deleted at each round: nothing stays
    in the bucket that the hub does not account for, and no kept copy can be written over
    (devices only ever get addresses under ``incoming/``). Returns how many went."""
    gone = 0
    wanted = {upload_key(r["device"], r["path"]) for r in db.all("SELECT device, path FROM locker WHERE state = 'wanted'")}
    for key in bucket.sizes(f"{INCOMING}/"):
        if key in wanted:
            continue
        try:
            bucket.delete(key)
            gone += 1
        except Exception as exc:
            log.warning("locker: cannot delete the stray upload %s: %s", key, exc)
    return gone


def release(db, bucket: Bucket, audit, now: float, *, now_us: int | None = None) -> int:
    """Copies whose holds have all ended and whose minimum retention has passed: deleted, each
    deletion audited. Returns how many objects went."""
    now_us = now_us if now_us is not None else int(now * 1e6)
    gone = 0
    for row in db.all(
            "SELECT k.device, k.key, k.state, k.record_class, k.recording_id, k.wanted_at, k.url_expires,"
            " r.ended_wall_us, r.started_wall_us"
            " FROM locker k JOIN recordings r ON r.device = k.device AND r.id = k.recording_id"
            " WHERE k.kind = 'segment' AND k.state IN ('kept', 'wanted') AND NOT " + HELD + " ORDER BY k.wanted_at"):
        # From the recording's end as the device says it — but never before the hub first saw
        # the recording: a device whose clock was set back cannot make young footage look old.
        since = max(row["ended_wall_us"] or row["started_wall_us"], int(row["wanted_at"] * 1e6))
        if since + MIN_DAYS.get(row["record_class"], 365) * DAY_US > now_us:
            continue
        if row["state"] == "wanted" and row["url_expires"] and row["url_expires"] > now:
            continue  # the device may still put it: wait for its address to expire, then nothing can
        gone += _delete(db, bucket, audit, now, row["device"], row["key"],
                        {"recording": row["recording_id"], "why": "no hold, and the minimum retention has passed"})
    # a day key goes with the last copy sealed to it
    for row in db.all(
            "SELECT k.device, k.key, k.record_class, k.day FROM locker k WHERE k.kind = 'day_key'"
            " AND k.state IN ('kept', 'wanted') AND NOT EXISTS (SELECT 1 FROM locker s WHERE s.device = k.device"
            " AND s.kind = 'segment' AND s.record_class = k.record_class AND s.day = k.day AND s.state <> 'deleted')"):
        gone += _delete(db, bucket, audit, now, row["device"], row["key"],
                        {"why": "no copy sealed to this day key is kept"})
    return gone


def _delete(db, bucket: Bucket, audit, now: float, device: str, key: str, detail: dict) -> bool:
    """One copy deleted, its row marked and the deletion audited; False (said in the process log)
    when the store refuses — an Object Lock's retention, the store away — for the next round."""
    try:
        bucket.delete(key)
    except Exception as exc:
        log.warning("locker: cannot delete %s yet: %s", key, exc)
        return False
    with db.conn.transaction():
        db.execute("UPDATE locker SET state = 'deleted', deleted_at = ?, url = '', url_expires = NULL"
                   " WHERE device = ? AND key = ?", (now, device, key))
        audit("locker.delete", subject=key, detail={"device": device, **detail})
    return True


class Keeper:
    """The locker's round every ``every`` seconds, on a thread of its own: want, stage, check, release."""

    def __init__(self, dsn: str, bucket: Bucket, audit, *, lifetime: int = 3600, every: float = 2.0,
                 pusher=None):
        self.dsn, self.bucket, self.audit, self.lifetime, self.every = dsn, bucket, audit, lifetime, every
        self.pusher = pusher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hub-locker", daemon=True)
        self._failure = ""

    def start(self) -> "Keeper":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def round(self, db) -> Round:
        now = time.time()
        r = Round()
        with db.conn.transaction():
            r.wanted = want(db, now)
            r.staged = stage(db, self.bucket, now, self.lifetime)
        with db.conn.transaction():
            r.kept = check_copies(db, self.bucket, now)
        r.deleted = release(db, self.bucket, self.audit, now)
        sweep_incoming(db, self.bucket)
        if r.kept or r.deleted:
            with db.conn.transaction():
                stage(db, self.bucket, now, self.lifetime)  # what was kept leaves the device's list
            r.staged += 1
        if r.staged and self.pusher is not None:
            self.pusher.wake()
        return r

    def _loop(self) -> None:
        db = None
        while not self._stop.wait(self.every):
            try:
                db = db or connect(self.dsn)
                self.round(db)
                if self._failure:
                    log.info("locker: working again")
                self._failure = ""
            except Exception as exc:  # the bucket or the database is away: the next round tries again
                if repr(exc) != self._failure:
                    log.exception("locker: a round failed; trying again every %.0f s", self.every)
                    self._failure = repr(exc)
                if db is not None:
                    db.close()
                db = None
        if db is not None:
            db.close()
