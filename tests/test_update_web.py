"""Updates from the admin page: the manager uploads a release (webui/updates.py), the root
helper the request starts on the device installs it (image-build/overlay/usr/lib/kiroku/
update-request, run here as the test's user, who stands in for the web UI's), and the page
shows the outcome and the audit log has it.

The helper runs the real kiroku-update on test_update.py's device (a temporary root with
fakes for systemctl and install-venv), on releases signed by the real release tool.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pwd
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import werkzeug.wrappers.request

from firmware.recorder import State
from tests import test_update, test_webui
from tests.helpers import wait_for
from tests.test_update import REPO, UPDATE, Device, make_key, release, run
from tests.webui_helpers import Api, first_run, login, logout, post, staff

HELPER = REPO / "image-build" / "overlay" / "usr" / "lib" / "kiroku" / "update-request"


# the recorder's control socket (test_webui), a release key and a device (test_update)
server, client = test_webui.server, test_webui.client
key, device = test_update.key, test_update.device


@pytest.fixture
def app(data_dir):
    return test_webui.make_app(data_dir, KIROKU_UPDATE_LOG_EVERY=0.2)


def device_acts(data_dir: Path, device: Device, **settings):
    """What kiroku-update-request.path starts on the device once the request is there."""
    work = device.root / "run"
    work.mkdir(exist_ok=True)
    env = {**device.env(**settings), "KIROKU_UPDATE_DIR": str(data_dir / "update"), "KIROKU_UPDATE": str(UPDATE),
           "KIROKU_WEB_USER": pwd.getpwuid(os.getuid()).pw_name, "KIROKU_WORK": str(work)}
    return run(HELPER, env=env)


def outcome(data_dir: Path, update_id: str) -> dict:
    return json.loads((data_dir / "update" / f"{update_id}.outcome").read_text())


def upload(client, path: Path | None, data: bytes | None = None, name: str = "kiroku.release.tar"):
    body = data if data is not None else path.read_bytes()
    return post(client, "/admin/update/", {"release": (io.BytesIO(body), name)}, token_from="/admin/update/",
                content_type="multipart/form-data")


def audit(vault, action: str) -> list[dict]:
    return [e for e in vault.audit_log.entries(vault.db) if e["action"] == action]


def page(client) -> str:
    return client.get("/admin/update/").get_data(as_text=True)


def test_a_manager_uploads_a_release_and_the_device_installs_it(server, client, vault, data_dir, tmp_path,
                                                                key, device):
    first_run(client)
    dashboard = client.get("/admin/").get_data(as_text=True)
    assert re.search(r'id="software-version">0\.1\.0<', dashboard) and 'id="software-last"' not in dashboard
    before = page(client)
    assert 'id="update-form"' in before and "0.1.0" in before
    assert 'id="update-simulated"' in before, "on simulated hardware nothing installs: the page says so"
    rel = release(tmp_path, key, "0.2.0")

    response = upload(client, rel)

    assert response.status_code == 302
    update_id = (data_dir / "update" / "request").read_text().strip()
    assert (data_dir / "update" / f"{update_id}.tar").read_bytes() == rel.read_bytes()
    [asked] = audit(vault, "update.request")
    assert asked["actor"] == "yamada" and asked["subject"] == "0.2.0" and asked["detail"]["id"] == update_id
    waiting = page(client)
    assert "開始待ち" in waiting and 'id="update-in-progress"' in waiting and 'id="update-form"' not in waiting
    # One at a time: a second upload while the first waits is refused, the first untouched.
    assert upload(client, rel).status_code == 302
    assert (data_dir / "update" / "request").read_text().strip() == update_id
    assert len(audit(vault, "update.request")) == 1

    done = device_acts(data_dir, device)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.2.0" and device.kiroku() == "kiroku 0.2.0"
    assert not (data_dir / "update" / "request").exists()
    assert not (data_dir / "update" / f"{update_id}.tar").exists(), "the uploaded copy is removed once taken"
    assert outcome(data_dir, update_id)["state"] == "installed"
    assert outcome(data_dir, update_id)["sha256"] == asked["detail"]["sha256"]
    after = page(client)
    assert "完了（新しい版で動作中）" in after and "is installed and running" in after
    assert 'id="update-in-progress"' not in after and 'id="update-form"' in after
    page(client)
    last = re.search(r'<p id="software-last"[^>]*>(.*?)</p>', client.get("/admin/").get_data(as_text=True), re.S)
    assert "0.1.0 → 0.2.0" in last[1] and "完了" in last[1] and "warning" not in last[0]
    [logged] = audit(vault, "update.installed")  # logged once, however often the page is seen
    assert logged["actor"] == "yamada" and logged["subject"] == "0.2.0" and logged["detail"]["id"] == update_id


def test_a_broken_release_is_rolled_back_and_the_page_says_why(server, client, vault, data_dir, tmp_path,
                                                               key, device):
    first_run(client)
    assert upload(client, release(tmp_path, key, "0.2.0", broken=True)).status_code == 302

    done = device_acts(data_dir, device, timeout=2)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.1.0"
    shown = page(client)
    assert "更新されませんでした" in shown and "0.2.0 was not installed" in shown
    client.set_cookie("lang", "en")
    assert "not installed (the previous version runs)" in page(client)
    last = re.search(r'<p id="software-last"[^>]*>(.*?)</p>', client.get("/admin/").get_data(as_text=True), re.S)
    assert 'class="warning"' in last[0] and "Last update" in last[1] and "not installed" in last[1], \
        "the dashboard flags an update that did not go in"
    [logged] = audit(vault, "update.not_installed")
    assert logged["subject"] == "0.2.0"
    assert not audit(vault, "update.installed")


def test_a_release_signed_by_another_key_is_not_installed(server, client, vault, data_dir, tmp_path, device):
    first_run(client)
    other = make_key(tmp_path / "other.pem")[0]
    assert upload(client, release(tmp_path, other, "0.2.0")).status_code == 302

    device_acts(data_dir, device)

    assert device.running == "venv-0.1.0"
    assert "does not match this device&#39;s release key" in page(client)
    assert audit(vault, "update.not_installed")


@pytest.mark.parametrize("what", ["empty", "random", "a tar without a manifest", "another program's manifest"])
def test_what_is_not_a_release_is_refused_and_nothing_is_asked(server, client, vault, data_dir, what):
    first_run(client)
    api = Api(client)
    if what == "empty":
        body = b""
    elif what == "random":
        body = bytes(range(256)) * 40
    else:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            text = b"kiroku-release 1\nversion 9.9\n" if what != "another program's manifest" else b"other 1\n"
            names = ["README"] if what == "a tar without a manifest" else ["manifest", "manifest.sig"]
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))
        body = buffer.getvalue()

    response = api.post("/api/v1/update", data={"release": (io.BytesIO(body), "x.tar")},
                        content_type="multipart/form-data")

    assert response.status_code == 400
    assert response.get_json()["code"] in ("update.no_file", "update.not_a_release")
    assert not (data_dir / "update" / "request").exists()
    assert not audit(vault, "update.request")


def test_no_update_while_recording(server, recorder, hardware, client, vault, data_dir, tmp_path, key):
    first_run(client)
    hardware.simulator.press()
    hardware.simulator.release()
    wait_for(lambda: recorder.state == State.RECORDING, what="recording")
    assert 'id="update-busy"' in page(client)

    response = Api(client).post("/api/v1/update", data={"release": (io.BytesIO(release(tmp_path, key, "0.2.0")
                                                                               .read_bytes()), "x.tar")},
                                content_type="multipart/form-data")

    assert response.status_code == 409 and response.get_json()["code"] == "update.recording"
    assert not (data_dir / "update" / "request").exists()
    assert not audit(vault, "update.request")


def test_a_full_data_partition_is_said_and_leaves_nothing_half_written(server, client, vault, data_dir, tmp_path,
                                                                       key, monkeypatch):
    from firmware import fsutil

    first_run(client)
    written = {"bytes": 0}
    real_write = os.write

    def fills_up(fd, data):  # the card fills up a megabyte into the release
        if written["bytes"] >= 2**20:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[:256 * 1024]))
        written["bytes"] += n
        return n

    rel = release(tmp_path, key, "0.2.0").read_bytes() + b"\0" * 3 * 2**20  # tar's trailing zeros, longer
    monkeypatch.setattr(fsutil.os, "write", fills_up)

    response = Api(client).post("/api/v1/update", data={"release": (io.BytesIO(rel), "x.tar")},
                                content_type="multipart/form-data")

    monkeypatch.undo()
    assert response.status_code == 507 and "No space left" in response.get_json()["detail"]
    assert written["bytes"] >= 2**20, "the write did fail partway"
    assert sorted(p.name for p in (data_dir / "update").iterdir()) == [".lock"], "nothing half-written is kept"
    assert not audit(vault, "update.request"), "no request is logged that was never made"


def test_a_waiting_request_can_be_withdrawn(server, client, vault, data_dir, tmp_path, key, device):
    first_run(client)
    upload(client, release(tmp_path, key, "0.2.0"))
    update_id = (data_dir / "update" / "request").read_text().strip()
    cancel = re.search(r'action="(/admin/update/[0-9a-f]{32}/cancel)"', page(client)).group(1)

    assert post(client, cancel, token_from="/admin/update/").status_code == 302

    assert not (data_dir / "update" / "request").exists()
    assert not (data_dir / "update" / f"{update_id}.tar").exists()
    assert "取り消し済み" in page(client) and 'id="update-form"' in page(client)
    assert audit(vault, "update.cancel")[0]["detail"]["id"] == update_id
    # the device, had it been about to look, finds nothing to do
    assert device_acts(data_dir, device).returncode == 0
    assert device.running == "venv-0.1.0" and not (data_dir / "update" / f"{update_id}.outcome").exists()


def test_a_request_the_web_ui_did_not_write_runs_nothing(data_dir, device):
    folder = data_dir / "update"
    folder.mkdir()
    (folder / "request").write_text("../../etc/shadow\n")

    done = device_acts(data_dir, device)

    assert done.returncode == 0 and "ignored a request" in done.stderr
    assert not (folder / "request").exists(), "a bad request must not start the helper again and again"
    (folder / ".request.taken").write_text("rubbish\n")  # nor a bad claim (the path unit watches it too)
    assert device_acts(data_dir, device).returncode == 0
    assert not (folder / ".request.taken").exists()
    assert device.running == "venv-0.1.0" and not list(folder.glob("*.outcome"))


def test_a_request_whose_release_is_gone_says_so(data_dir, device):
    folder = data_dir / "update"
    folder.mkdir()
    update_id = "0123456789abcdef0123456789abcdef"
    (folder / "request").write_text(update_id + "\n")

    device_acts(data_dir, device)

    said = outcome(data_dir, update_id)
    assert said["state"] == "not-installed" and "could not be read" in said["output"]


def test_only_a_manager_may_update(server, client, app, vault, data_dir, tmp_path, key):
    staff(client, app)
    rel = release(tmp_path, key, "0.2.0").read_bytes()
    for name in ("sato", "suzuki"):
        login(client, name)
        assert client.get("/admin/update/").status_code == 403
        api = Api(client)
        assert api.get("/api/v1/update").status_code == 403
        assert api.post("/api/v1/update", data={"release": (io.BytesIO(rel), "x.tar")},
                        content_type="multipart/form-data").status_code == 403
        logout(client)
    assert client.get("/api/v1/update").status_code == 401
    # and the form without its CSRF token
    login(client, "yamada")
    assert client.post("/admin/update/", data={"release": (io.BytesIO(rel), "x.tar")},
                       content_type="multipart/form-data").status_code == 400
    assert not (data_dir / "update" / "request").exists()


def test_the_api_lists_the_running_version_and_the_updates(server, client, vault, data_dir, tmp_path, key,
                                                            device):
    first_run(client)
    api = Api(client)
    sent = api.post("/api/v1/update", data={"release": (io.BytesIO(release(tmp_path, key, "0.2.0").read_bytes()),
                                                        "x.tar")}, content_type="multipart/form-data")
    assert sent.status_code == 202 and sent.get_json()["version"] == "0.2.0"
    device_acts(data_dir, device)

    listed = api.get("/api/v1/update").get_json()

    assert listed["running"]
    [item] = listed["updates"]
    assert item["id"] == sent.get_json()["id"] and item["state"] == "installed" and item["by"] == "yamada"
    assert json.loads((data_dir / "update" / f"{item['id']}.json").read_text())["version"] == "0.2.0"
    software = api.get("/api/v1/dashboard").get_json()["software"]
    assert software["running"] == listed["running"]
    assert software["last_update"]["id"] == item["id"] and software["last_update"]["state"] == "installed"


def test_the_device_takes_only_the_web_uis_own_regular_files(data_dir, device, tmp_path):
    """A web UI that has been broken into can leave anything in its folder; root reads none
    of it but a regular file of the web UI's with one link, never blocking."""
    folder = data_dir / "update"
    folder.mkdir()
    secret = tmp_path / "root-only"
    secret.write_bytes(b"not for the web UI")
    cases = {"symlink": lambda p: p.symlink_to(secret), "hard link": lambda p: os.link(secret, p),
             "fifo": lambda p: os.mkfifo(p), "folder": lambda p: p.mkdir()}
    for n, (kind, make) in enumerate(cases.items()):
        update_id = f"{n:032x}"
        make(folder / f"{update_id}.tar")
        (folder / "request").write_text(update_id + "\n")

        assert device_acts(data_dir, device).returncode == 0, kind

        said = outcome(data_dir, update_id)
        assert said["state"] == "not-installed" and "could not be read" in said["output"], kind
    assert device.running == "venv-0.1.0"
    # a request that is a link is not read either
    (folder / "elsewhere").write_text("f" * 32 + "\n")
    (folder / "request").symlink_to(folder / "elsewhere")
    assert "ignored a request" in device_acts(data_dir, device).stderr
    assert not (folder / f"{'f' * 32}.outcome").exists()


def test_an_update_cut_short_by_a_restart_says_so(server, client, vault, data_dir, tmp_path, key):
    first_run(client)
    upload(client, release(tmp_path, key, "0.2.0"))
    folder = data_dir / "update"
    update_id = (folder / "request").read_text().strip()
    # the device took it, began, and lost power: its outcome is from another boot
    (folder / "request").rename(folder / ".request.taken")
    (folder / f"{update_id}.outcome").write_text(json.dumps({"state": "running", "boot": "an earlier boot"}))
    (folder / ".request.taken").unlink()

    shown = page(client)

    assert "中断" in shown and 'id="update-form"' in shown, "an interrupted update does not block the next"
    page(client)
    [logged] = audit(vault, "update.interrupted")
    assert logged["detail"]["id"] == update_id
    assert not audit(vault, "update.installed") and not audit(vault, "update.not_installed")


def test_a_withdrawal_after_the_device_took_the_request_is_refused(server, client, vault, data_dir, tmp_path, key):
    first_run(client)
    upload(client, release(tmp_path, key, "0.2.0"))
    folder = data_dir / "update"
    update_id = (folder / "request").read_text().strip()
    cancel = re.search(r'action="(/admin/update/[0-9a-f]{32}/cancel)"', page(client)).group(1)
    (folder / "request").rename(folder / ".request.taken")  # the device's claim, just before the click

    response = Api(client).post(cancel.replace("/admin/update/", "/api/v1/update/"))

    assert response.status_code == 409 and response.get_json()["code"] == "update.already_started"
    assert (folder / f"{update_id}.tar").exists(), "the release the device is about to read stays"
    assert not audit(vault, "update.cancel")


def test_a_request_already_there_is_never_overwritten(server, client, vault, data_dir, tmp_path, key):
    first_run(client)
    folder = data_dir / "update"
    folder.mkdir()
    (folder / "request").write_text("e" * 32 + "\n")  # another thread's, made a moment ago

    response = Api(client).post("/api/v1/update", data={"release": (io.BytesIO(release(tmp_path, key, "0.2.0")
                                                                               .read_bytes()), "x.tar")},
                                content_type="multipart/form-data")

    assert response.status_code == 409 and response.get_json()["code"] == "update.in_progress"
    assert (folder / "request").read_text() == "e" * 32 + "\n"
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "request"]
    assert not audit(vault, "update.request"), "no request is logged that was not made"


def test_the_outcome_is_logged_without_anyone_looking(server, client, vault, data_dir, tmp_path, key, device):
    first_run(client)
    upload(client, release(tmp_path, key, "0.2.0"))
    update_id = (data_dir / "update" / "request").read_text().strip()

    device_acts(data_dir, device)

    wait_for(lambda: audit(vault, "update.installed"), what="the outcome in the audit log", timeout=20)
    assert audit(vault, "update.installed")[0]["detail"]["id"] == update_id


def test_a_file_too_large_for_the_device_is_refused_in_words(server, vault, data_dir):
    client = test_webui.make_app(data_dir, KIROKU_MAX_UPDATE=2 * 2**20).test_client()
    first_run(client)
    huge = b"\0" * (3 * 2**20)  # over what the device takes

    response = upload(client, None, data=huge)

    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/update/")
    assert "ファイルが大きすぎます" in page(client)
    assert not (data_dir / "update" / "request").exists()


def test_a_managers_release_may_be_larger_than_any_other_form(server, client, app, vault, data_dir, tmp_path, key,
                                                              monkeypatch):
    staff(client, app)
    rel = release(tmp_path, key, "0.2.0").read_bytes() + b"\0" * (14 * 2**20)  # tar's trailing zeros, longer
    # It is written to the data partition as it comes, never to memory or /tmp (memory, on the
    # device), where Werkzeug would spool it.
    def in_memory(*args):
        raise AssertionError("the upload was spooled to memory or /tmp")

    monkeypatch.setattr(werkzeug.wrappers.request, "default_stream_factory", in_memory)
    # Over the app's limit for every other form: anyone else's is refused before it is read.
    login(client, "sato")
    assert post(client, "/admin/update/", {"release": (io.BytesIO(rel), "x.tar")}, token_from="/account",
                content_type="multipart/form-data").status_code == 413
    assert Api(client).post("/api/v1/update", data={"release": (io.BytesIO(rel), "x.tar")},
                            content_type="multipart/form-data").status_code == 413
    logout(client)
    assert client.post("/admin/update/", data={"release": (io.BytesIO(rel), "x.tar")},
                       content_type="multipart/form-data").status_code == 413
    assert not (data_dir / "update").exists(), "nothing was stored for them"

    login(client, "yamada")
    assert "最大 256 MB" in page(client)
    response = upload(client, None, data=rel)

    assert response.status_code == 302, response.get_data(as_text=True)
    update_id = (data_dir / "update" / "request").read_text().strip()
    stored = data_dir / "update" / f"{update_id}.tar"
    assert stored.read_bytes() == rel
    [asked] = audit(vault, "update.request")
    assert asked["detail"]["bytes"] == len(rel)
    assert asked["detail"]["sha256"] == hashlib.sha256(rel).hexdigest()


def test_a_release_the_card_has_no_room_for_is_not_stored(server, vault, data_dir, tmp_path, key, monkeypatch):
    # room for it twice (the page's copy and ID.tar, then ID.tar and root's) beside what the
    # recorder keeps free: here 300 MB free, 256 MB kept
    from webui import releases

    card = SimpleNamespace(disk_usage=lambda path: SimpleNamespace(free=300 * 2**20))
    monkeypatch.setattr(releases, "shutil", card)
    client = test_webui.make_app(data_dir, KIROKU_RESERVE_MB=256).test_client()
    first_run(client)
    rel = release(tmp_path, key, "0.2.0").read_bytes() + b"\0" * (30 * 2**20)

    response = Api(client).post("/api/v1/update", data={"release": (io.BytesIO(rel), "x.tar")},
                                content_type="multipart/form-data")

    assert response.status_code == 507
    assert "the data partition has 300 MB free; this file needs 60 MB there beside the 256 MB kept free for " \
           "recording: free some space (the storage page)" in response.get_json()["detail"]
    assert not audit(vault, "update.request") and not list((data_dir / "update").iterdir())
    # a smaller one fits
    response = upload(client, None, data=rel[:-28 * 2**20])
    assert response.status_code == 302 and (data_dir / "update" / "request").exists()


def test_a_refused_body_is_read_a_little_at_a_time_and_a_huge_one_not_at_all(server, data_dir, monkeypatch):
    # The real server: cheroot reads what a refusal left unread to keep the connection open —
    # by itself in one read, into memory.
    import http.client
    import threading

    import cheroot.server

    from webui.server import DRAIN_CHUNK, server_for

    reads = []
    real_read = cheroot.server.KnownLengthRFile.read

    def read(self, size=None):
        reads.append(size)
        return real_read(self, size)

    monkeypatch.setattr(cheroot.server.KnownLengthRFile, "read", read)
    app = test_webui.make_app(data_dir, KIROKU_MAX_UPDATE=16 * 2**20)
    web = server_for(app, "127.0.0.1", 0)
    web.prepare()
    threading.Thread(target=web.serve, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", web.bind_addr[1], timeout=30)
        body = b"x" * (12 * 2**20)
        # refused unread: the rest is read and dropped, the connection kept
        conn.request("POST", "/api/v1/update", body=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
        first = conn.getresponse()
        assert first.status >= 400 and first.read()  # (not set up yet: 503)
        assert sum(n for n in reads if n) >= len(body) and max(n or 0 for n in reads) <= DRAIN_CHUNK
        conn.request("GET", "/setup/")
        assert conn.getresponse().status == 200, "the same connection still serves"
        # larger than the view takes from whoever sends it (here a stranger, or anyone on a
        # page other than the update's), or than any view takes: refused before it is read,
        # with the 413 on which the connection is closed
        for path, length in (("/api/v1/update", 13 * 2**20), ("/admin/update/", 13 * 2**20),
                             ("/login", 13 * 2**20), ("/api/v1/update", 17 * 2**20)):
            reads.clear()
            conn = http.client.HTTPConnection("127.0.0.1", web.bind_addr[1], timeout=30)
            conn.putrequest("POST", path)
            conn.putheader("Content-Type", "multipart/form-data; boundary=b")
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            answer = conn.getresponse()
            assert answer.status == 413 and answer.getheader("Connection") == "close", (path, length)
            assert not [n for n in reads if n], (path, length)
    finally:
        web.stop()


def test_a_request_a_run_took_and_never_finished_is_reported_and_unblocks(server, client, vault, data_dir, tmp_path,
                                                                          key, device):
    first_run(client)
    upload(client, release(tmp_path, key, "0.2.0"))
    folder = data_dir / "update"
    update_id = (folder / "request").read_text().strip()
    (folder / "request").rename(folder / ".request.taken")  # taken; then the helper was killed
    assert 'id="update-in-progress"' in page(client)

    done = device_acts(data_dir, device)  # the path unit starts it again: .request.taken is there

    assert done.returncode == 0, done.stderr
    said = outcome(data_dir, update_id)
    assert said["state"] == "not-installed" and "stopped before it finished" in said["output"]
    assert not (folder / ".request.taken").exists()
    assert 'id="update-form"' in page(client)
    assert audit(vault, "update.not_installed")[0]["detail"]["id"] == update_id
    assert device.running == "venv-0.1.0"
