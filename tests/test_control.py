"""The control socket and `kiroku ctl`: what scripts, the web UI and people rely on."""

from __future__ import annotations

import json
import socket

import pytest

from kiroku import cli
from firmware.control import ControlClient, ControlError, ControlServer, socket_path
from firmware.recorder import State
from tests.helpers import wait_for


@pytest.fixture
def server(recorder, data_dir):
    srv = ControlServer(socket_path(data_dir), recorder).start()
    yield srv
    srv.close()


def raw_exchange(path, *lines: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        replies = []
        f = s.makefile("rb")
        for line in lines:
            s.sendall(line)
            replies.append(json.loads(f.readline()))
        return replies


def test_start_mark_stop_through_ctl(server, data_dir, capsys, footage):
    assert cli.main(["ctl", "--data", str(data_dir), "--by", "suzuki", "start"]) == 0
    wait_for(lambda: server.recorder.state == State.RECORDING, what="recording")
    assert cli.main(["ctl", "--data", str(data_dir), "mark", "--note", "raised voice", "--section", "市民課"]) == 0
    assert cli.main(["ctl", "--data", str(data_dir), "stop"]) == 0
    wait_for(lambda: server.recorder.state == State.IDLE, what="idle")
    rec = footage.recordings()[0]
    assert rec["started_by"] == "suzuki"
    assert [(m["note"], m["section"]) for m in footage.marks(rec["id"])] == [("raised voice", "市民課")]
    capsys.readouterr()
    assert cli.main(["ctl", "--data", str(data_dir), "status"]) == 0
    out = capsys.readouterr().out
    assert "state      idle" in out and "1 incident mark(s)" in out


def test_refusals_are_explained(server, data_dir, capsys):
    assert cli.main(["ctl", "--data", str(data_dir), "stop"]) == 1
    assert "not recording (state: idle)" in capsys.readouterr().err
    assert cli.main(["ctl", "--data", str(data_dir), "mark"]) == 1
    assert "there is no recording to mark" in capsys.readouterr().err


def test_malformed_requests_get_errors_and_the_server_keeps_serving(server):
    replies = raw_exchange(server.path, b"not json\n", b'["op"]\n', b'{"op": "explode"}\n',
                           b'{"op": "mark", "note": 5}\n', b'{"op": "status"}\n')
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert "not a JSON object" in replies[0]["error"]
    assert "unknown op 'explode'" in replies[2]["error"]
    assert replies[4]["status"]["state"] == "idle"


def test_the_simulator_presses_the_pin_not_the_state_machine(server, hardware):
    client = ControlClient(server.path)
    client.request("sim", action="press")
    assert hardware.button.is_pressed and hardware.simulator.button_pin.state is False
    client.request("sim", action="release")
    wait_for(lambda: server.recorder.state == State.NOTICE, what="the notice")
    with pytest.raises(ControlError, match="unknown simulator action"):
        client.request("sim", action="explode")


def test_ctl_without_a_recorder_says_how_to_start_one(tmp_path, capsys):
    assert cli.main(["ctl", "--data", str(tmp_path), "status"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kiroku ctl: the recorder is not running (no control socket at")
    assert "kiroku run" in err


def test_a_stale_socket_file_is_replaced(recorder, data_dir):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(data_dir)))
    stale.close()  # bound, never listening: what a killed recorder leaves behind
    srv = ControlServer(socket_path(data_dir), recorder).start()
    try:
        assert ControlClient(srv.path).status()["state"] == "idle"
    finally:
        srv.close()


def test_options_may_follow_the_action(server, data_dir, capsys):
    assert cli.main(["ctl", "status", "--data", str(data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "idle"
    assert cli.main(["ctl", "--data", str(data_dir), "start", "--by", "tanaka"]) == 0
    wait_for(lambda: server.recorder.state == State.RECORDING, what="recording")
    assert server.recorder.recording.started_by == "tanaka"


# -- a busy recorder (issue 23, 6) ---------------------------------------------------------------

def _full_socket(path):
    """A socket that listens and never accepts, its queue filled: a recorder too busy to answer."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:
            s.close()
            return listener, queued
        queued.append(s)


def test_a_full_control_socket_is_waited_out_then_reported_as_busy(tmp_path):
    from firmware.control import RecorderBusy

    listener, queued = _full_socket(tmp_path / "control.sock")
    try:
        with pytest.raises(RecorderBusy, match="busy") as caught:
            ControlClient(tmp_path / "control.sock", busy_wait=0.2).status()
        assert isinstance(caught.value, ControlError) and isinstance(caught.value, ConnectionError)
    finally:
        for s in [listener, *queued]:
            s.close()


def test_the_control_socket_queues_as_many_callers_as_the_web_ui_has_workers(tmp_path):
    srv = ControlServer(tmp_path / "control.sock", recorder=None)  # listening, not yet accepting
    callers = []
    try:
        for _ in range(24):  # the web UI's 8 server threads, three times over
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            callers.append(s)
            s.setblocking(False)
            s.connect(str(tmp_path / "control.sock"))  # BlockingIOError once the queue is full
    finally:
        for s in callers:
            s.close()
        srv.close()


def test_the_web_ui_answers_503_with_the_reason_when_the_recorder_is_busy(server, data_dir, tmp_path):
    from tests.test_webui import make_app
    from tests.webui_helpers import first_run
    from webui.services import state

    app = make_app(data_dir)
    client = app.test_client()
    first_run(client)
    listener, queued = _full_socket(tmp_path / "busy.sock")
    try:
        state(app).control = ControlClient(tmp_path / "busy.sock")  # as the web UI makes it
        response = client.get("/api/v1/status")
        assert response.status_code == 503
        assert response.json["error"] == "記録装置が混み合っています。しばらくしてからやり直してください。"
        assert response.headers["Retry-After"] == "1"
        client.set_cookie("lang", "en")
        assert "busy" in client.get("/api/v1/status").json["error"]
        assert client.get("/", follow_redirects=True).status_code < 500  # a page: never a 500
    finally:
        for s in [listener, *queued]:
            s.close()


def test_sixteen_callers_at_once_during_a_recording_all_get_an_answer(server, data_dir, footage):
    from concurrent.futures import ThreadPoolExecutor

    server.recorder.start_recording(by="test")
    wait_for(lambda: server.recorder.state == State.RECORDING, what="recording")

    def ask(_):
        client = ControlClient(socket_path(data_dir))
        return [client.status()["state"] for _ in range(20)]

    with ThreadPoolExecutor(16) as pool:
        answers = [state for batch in pool.map(ask, range(16)) for state in batch]
    assert len(answers) == 320 and set(answers) <= {"recording", "stopping", "idle"}
    server.recorder.stop_recording(by="test")
