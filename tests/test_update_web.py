"""Updates from the admin page: the manager uploads a release (webui/updates.py), the root
helper the request starts on the device installs it (image-build/overlay/usr/lib/kiroku/
update-request, run here as the test's user), and the page shows and logs the outcome.

The helper runs the real kiroku-update on test_update.py's device (a temporary root with
fakes for systemctl and install-venv), on releases signed by the real release tool.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from firmware.control import ControlServer, socket_path
from firmware.recorder import State
from tests.helpers import wait_for
from tests.test_update import REPO, UPDATE, Device, make_key, release, run
from tests.webui_helpers import Api, first_run, login, logout, post, staff
from webui import create_app

HELPER = REPO / "image-build" / "overlay" / "usr" / "lib" / "kiroku" / "update-request"


@pytest.fixture
def server(recorder, data_dir):
    srv = ControlServer(socket_path(data_dir), recorder).start()
    yield srv
    srv.close()


@pytest.fixture
def status(tmp_path) -> Path:
    """Where the root helper writes outcomes (/run/kiroku-update on the device)."""
    return tmp_path / "run-kiroku-update"


@pytest.fixture
def app(data_dir, status):
    return create_app({"KIROKU_DATA": str(data_dir), "KIROKU_SIMULATED": True, "TESTING": True,
                       "KIROKU_SCRYPT_WORK_FACTOR": 10, "KIROKU_UPDATE_STATUS": str(status)})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def key(tmp_path) -> Path:
    return make_key(tmp_path / "release.pem")[0]


@pytest.fixture
def device(tmp_path, key) -> Device:
    return Device(tmp_path / "root", key.with_suffix(".pub"), tmp_path / "fakes")


def device_acts(data_dir: Path, status: Path, device: Device, **settings):
    """What kiroku-update-request.path starts on the device once the request is there."""
    env = {**device.env(**settings), "KIROKU_UPDATE_DIR": str(data_dir / "update"),
           "KIROKU_UPDATE_STATUS": str(status), "KIROKU_UPDATE": str(UPDATE), "KIROKU_AS_WEB": ""}
    return run(HELPER, env=env)


def upload(client, path: Path | None, data: bytes | None = None, name: str = "kiroku.release.tar"):
    body = data if data is not None else path.read_bytes()
    return post(client, "/admin/update/", {"release": (io.BytesIO(body), name)}, token_from="/admin/update/",
                content_type="multipart/form-data")


def audit(vault, action: str) -> list[dict]:
    return [e for e in vault.audit_log.entries(vault.db) if e["action"] == action]


def page(client) -> str:
    return client.get("/admin/update/").get_data(as_text=True)


def test_a_manager_uploads_a_release_and_the_device_installs_it(server, client, vault, data_dir, status, tmp_path,
                                                                key, device):
    first_run(client)
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
    assert "開始待ち" in waiting and 'http-equiv="refresh"' in waiting and 'id="update-form"' not in waiting
    # One at a time: a second upload while the first waits is refused, the first untouched.
    assert upload(client, rel).status_code == 302
    assert (data_dir / "update" / "request").read_text().strip() == update_id
    assert len(audit(vault, "update.request")) == 1

    done = device_acts(data_dir, status, device)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.2.0" and device.kiroku() == "kiroku 0.2.0"
    assert not (data_dir / "update" / "request").exists()
    assert not (data_dir / "update" / f"{update_id}.tar").exists(), "the uploaded copy is removed once taken"
    assert (status / update_id).read_text().splitlines()[0] == "installed"
    after = page(client)
    assert "完了（新しい版で動作中）" in after and "is installed and running" in after
    assert 'http-equiv="refresh"' not in after and 'id="update-form"' in after
    page(client)
    [logged] = audit(vault, "update.installed")  # logged once, however often the page is seen
    assert logged["actor"] == "yamada" and logged["subject"] == "0.2.0" and logged["detail"]["id"] == update_id


def test_a_broken_release_is_rolled_back_and_the_page_says_why(server, client, vault, data_dir, status, tmp_path,
                                                               key, device):
    first_run(client)
    assert upload(client, release(tmp_path, key, "0.2.0", broken=True)).status_code == 302

    done = device_acts(data_dir, status, device, timeout=2)

    assert done.returncode == 0, done.stderr
    assert device.running == "venv-0.1.0"
    shown = page(client)
    assert "更新されませんでした" in shown and "0.2.0 was not installed" in shown
    client.set_cookie("lang", "en")
    assert "not installed (the previous version runs)" in page(client)
    [logged] = audit(vault, "update.not_installed")
    assert logged["subject"] == "0.2.0"
    assert not audit(vault, "update.installed")


def test_a_release_signed_by_another_key_is_not_installed(server, client, vault, data_dir, status, tmp_path, device):
    first_run(client)
    other = make_key(tmp_path / "other.pem")[0]
    assert upload(client, release(tmp_path, other, "0.2.0")).status_code == 302

    device_acts(data_dir, status, device)

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
    from webui import updates

    first_run(client)
    real = updates.atomic_write

    def full(path, data, mode=0o640):
        if Path(path).name == "request":
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(updates, "atomic_write", full)

    response = Api(client).post("/api/v1/update", data={"release": (io.BytesIO(release(tmp_path, key, "0.2.0")
                                                                               .read_bytes()), "x.tar")},
                                content_type="multipart/form-data")

    assert response.status_code == 507 and "No space left" in response.get_json()["detail"]
    assert list((data_dir / "update").iterdir()) == []


def test_a_waiting_request_can_be_withdrawn(server, client, vault, data_dir, status, tmp_path, key, device):
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
    assert device_acts(data_dir, status, device).returncode == 0
    assert device.running == "venv-0.1.0" and not (status / update_id).exists()


def test_a_request_the_web_ui_did_not_write_runs_nothing(data_dir, status, device):
    folder = data_dir / "update"
    folder.mkdir()
    (folder / "request").write_text("../../etc/shadow\n")

    done = device_acts(data_dir, status, device)

    assert done.returncode == 0 and "ignored a request" in done.stderr
    assert not (folder / "request").exists(), "a bad request must not start the helper again and again"
    assert device.running == "venv-0.1.0" and not status.exists()


def test_a_request_whose_release_is_gone_says_so(data_dir, status, device):
    folder = data_dir / "update"
    folder.mkdir()
    update_id = "0123456789abcdef0123456789abcdef"
    (folder / "request").write_text(update_id + "\n")

    device_acts(data_dir, status, device)

    state, *words = (status / update_id).read_text().splitlines()
    assert state == "not-installed" and "could not be read" in " ".join(words)


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


def test_the_api_lists_the_running_version_and_the_updates(server, client, vault, data_dir, status, tmp_path, key,
                                                            device):
    first_run(client)
    api = Api(client)
    sent = api.post("/api/v1/update", data={"release": (io.BytesIO(release(tmp_path, key, "0.2.0").read_bytes()),
                                                        "x.tar")}, content_type="multipart/form-data")
    assert sent.status_code == 202 and sent.get_json()["version"] == "0.2.0"
    device_acts(data_dir, status, device)

    listed = api.get("/api/v1/update").get_json()

    assert listed["running"]
    [item] = listed["updates"]
    assert item["id"] == sent.get_json()["id"] and item["state"] == "installed" and item["by"] == "yamada"
    assert json.loads((data_dir / "update" / f"{item['id']}.json").read_text())["version"] == "0.2.0"
