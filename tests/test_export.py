"""Exports (Art. 9–11): a recording on simulated hardware leaves as a minimum-necessary,
signed package that a recipient checks offline — with kiroku or with standard tools."""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kiroku.cli import main
from firmware.export import ExportError
from firmware.hardware import open_hardware
from firmware.recorder import Recorder, State
from firmware.vault import Vault
from tests.conftest import set_up, small_config
from tests.helpers import av_offsets_us, decode, ffprobe, segments_of, tick_onsets, wait_for, whole_ticks

PASSPHRASE = "kanri no aikotoba 2026"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A device that recorded a little over 10 s at the counter, with a manager."""
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    data.mkdir()
    set_up(data, manager="kanri", passphrase=PASSPHRASE)
    (root / "pass.txt").write_text(PASSPHRASE + "\n")
    config = small_config()
    hw = open_hardware(config, simulate=True)
    vault = Vault.open(data, config)
    rec = Recorder(hw, config, vault).start()
    try:
        hw.simulator.press()
        hw.simulator.release()
        wait_for(lambda: rec.segments_written >= 6, timeout=30, what="six 2-second segments", progress=segments_of(rec))
        rec.stop_recording()
        wait_for(lambda: rec.state == State.IDLE, what="idle")
        recording = vault.recordings()[0]["id"]
        origin = vault.segments(recording)[0].start_us
    finally:
        rec.close()
        vault.close()
        hw.close()
    return {"root": root, "data": data, "recovery": root / "data-recovery.txt", "recording": recording,
            "origin_us": origin}


def stored_frames(recorded) -> list[tuple[float, bool]]:
    """Every frame of the recording as stored: (capture time in s from its first segment's start,
    keyframe?). A segment's frames sit where their capture time says (test_segments.py)."""
    import av

    from firmware.vault.age import X25519Identity

    identity = X25519Identity.parse(recorded["recovery"].read_text().split()[-1])
    vault = Vault.open(recorded["data"], readonly=True)
    frames = []
    try:
        for info in vault.segments(recorded["recording"]):
            with av.open(io.BytesIO(vault.open_segment_plaintext(info, identity))) as c:
                stream = c.streams.video[0]
                for packet in c.demux(stream):
                    if packet.pts is not None:
                        t = info.start_us + packet.pts * stream.time_base * 1_000_000
                        frames.append((float(t - recorded["origin_us"]) / 1e6, bool(packet.is_keyframe)))
    finally:
        vault.close()
    return frames


def export(recorded, out: Path, *extra: str, start="2", end="7", key=None) -> int:
    key = key or ["--recovery-key", str(recorded["recovery"])]
    return main(["export", "--data", str(recorded["data"]), *key, "--recording", recorded["recording"],
                 "--start", start, "--end", end, "--ground", "3", "--recipient", "北警察署 刑事課 佐藤",
                 "--reference", "北署刑第123号", "--request-date", "2026-11-27", "--out", str(out), *extra])


def unpack(package: Path, into: Path) -> Path:
    with zipfile.ZipFile(package) as z:
        z.extractall(into)
    return next(into.glob("kiroku-export-*"))


def verify(*args) -> int:
    return main(["verify", *map(str, args)])


def clip_of(package: Path) -> bytes:
    with zipfile.ZipFile(package) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/clip.mp4")))


def test_seconds_2_to_7_make_a_5_second_clip_that_verifies_and_fails_after_any_changed_byte(recorded, tmp_path,
                                                                                          capsys):
    package = tmp_path / "police.zip"
    assert export(recorded, package) == 0
    folder = unpack(package, tmp_path / "unpacked")  # what the recipient does first
    probe = ffprobe(folder / "clip.mp4")
    assert abs(float(probe["format"]["duration"]) - 5.0) <= 0.5
    assert {s["codec_name"] for s in probe["streams"]} == {"h264", "aac"}
    assert verify(package) == 0
    assert "INTACT" in capsys.readouterr().out

    assert verify(folder) == 0
    capsys.readouterr()
    for name in ("clip.mp4", "manifest.json"):
        size = (folder / name).stat().st_size
        for offset in (0, size // 2, size - 1):
            changed = tmp_path / f"changed-{name}-{offset}"
            shutil.copytree(folder, changed)
            data = bytearray((changed / name).read_bytes())
            data[offset] ^= 0x01
            (changed / name).write_bytes(bytes(data))
            assert verify(changed) == 1, f"a changed byte at {offset} of {name} went unnoticed"
            out = capsys.readouterr().out
            assert "does NOT verify" in out
            assert (f"{name} was CHANGED" in out) if name == "clip.mp4" else ("does NOT match manifest.json" in out)
    # the same inside the ZIP, as it travels
    raw = bytearray(package.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    (tmp_path / "changed.zip").write_bytes(bytes(raw))
    assert verify(tmp_path / "changed.zip") != 0


def test_the_sound_stays_with_the_picture_across_every_segment_boundary(recorded, tmp_path):
    """Each segment's sound has its own AAC encoder: a warm-up frame first, a padded frame
    last. A clip that carried those frames over played its sound about 5 ms later at every
    2-s boundary (160 ms a minute at 4-s segments)."""
    from tests.conftest import recovery_identity
    from tests.helpers import Footage

    vault = Vault.open(recorded["data"], small_config())
    try:  # each tick where the stored segments have it: a busy recorder's own jitter is not the export's
        stored = Footage(vault, recovery_identity(recorded["recovery"])).ticks(recorded["recording"])
    finally:
        vault.close()
    heard = {}
    for cut, extra in (("keyframe", []), ("exact", ["--exact"]), ("muted", None)):
        if extra is None:  # silence the tick of the fifth second, and only that
            tick = heard["keyframe"][4]
            extra = ["--mute", f"{tick - 0.2:.2f}-{tick + 0.2:.2f}"]
        package = tmp_path / f"{cut}.zip"
        assert export(recorded, package, *extra, start="0", end="11") == 0  # six segments, five boundaries
        manifest = json.loads((unpack(package, tmp_path / cut) / "manifest.json").read_text())
        start_us = recorded["origin_us"] + round(manifest["clip"]["start_s"] * 1e6)
        video, audio = av_offsets_us(clip_of(package), start_us)
        assert video and max(abs(v) for v in video) < 2_000, "frames sit where their capture time says"
        assert max(abs(a) for a in audio) < 1_000, f"{cut}: ticks heard off their second (µs): {audio}"
        decoded = decode(clip_of(package))
        assert decoded.audio_seconds == pytest.approx(manifest["clip"]["duration_s"], abs=0.03)
        start_s, end_s = manifest["clip"]["start_s"], manifest["clip"]["end_s"]
        ticks = [start_s + t for t in decoded.tick_positions_s]
        assert all(start_s - 1e-3 <= t < end_s for t in ticks), f"{cut}: a tick heard outside the clip: {ticks}"
        heard[cut] = whole_ticks(ticks, start_s, end_s)
        # Segment times are whole µs, so a segment's sound may be nudged up to 2 samples onto the
        # last one's end (and each side rounds to its own sample grid); no more, and it never adds up.
        expected = [t for t in whole_ticks(stored, start_s, end_s) if not (cut == "muted" and abs(t - tick) < 0.2)]
        assert heard[cut] == pytest.approx(expected, abs=3 / 48_000), \
            f"{cut}: the sound moved against the picture; clip {start_s}–{end_s} s, heard " \
            f"{[round(t, 5) for t in heard[cut]]}, stored {[round(t, 5) for t in expected]}"
    assert len(heard["keyframe"]) >= 10, "the tick of every second is heard"
    assert heard["exact"] == pytest.approx(heard["keyframe"], abs=1e-4)
    assert heard["muted"] == pytest.approx(heard["keyframe"][:4] + heard["keyframe"][5:], abs=1e-4)


class _AsFFmpeg71Reads:
    """A segment as FFmpeg 7.1 (Debian trixie's, the device's) demuxes it when opened as
    open_segment opens it: every packet's duration 0."""

    def __init__(self, container):
        self._container = container

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            packet.duration = 0
            yield packet


@pytest.mark.parametrize("durations", ["as-read", "none-as-ffmpeg-7.1"])
def test_the_sound_where_a_segment_begins_is_in_the_clip(tmp_path, monkeypatch, durations):
    """Every segment here begins on a whole second, just as the microphone's tick does. Each
    segment's sound ends in an AAC frame padded past it; FFmpeg 7.1 (the device's) gives no
    packet durations to cut that padding at, and an export that kept it put it in place of the
    next segment's first 5 ms: every tick there was heard 5 ms late, its beginning lost."""
    import firmware.export.cutter
    from firmware import clock
    from firmware.media.mp4 import open_segment
    from tests.helpers import lay_down

    if durations != "as-read":
        monkeypatch.setattr(firmware.export.cutter, "open_segment", lambda data: _AsFFmpeg71Reads(open_segment(data)))
    data = tmp_path / "data"
    data.mkdir()
    set_up(data, manager="kanri", passphrase=PASSPHRASE)
    vault = Vault.open(data, small_config())
    try:
        first_us = (clock.boottime_us() // 1_000_000 - 20) * 1_000_000  # a whole second, 20 s ago
        recording = lay_down(vault, small_config(), seconds=11, first_us=first_us)
        assert [(s.start_us - first_us) % 1_000_000 for s in vault.segments(recording)] == [0] * 6
    finally:
        vault.close()
    recorded = {"data": data, "recovery": tmp_path / "data-recovery.txt", "recording": recording}
    for cut, extra in (("keyframe", []), ("exact", ["--exact"])):
        package = tmp_path / f"{cut}.zip"
        assert export(recorded, package, *extra, start="0", end="9") == 0
        manifest = json.loads((unpack(package, tmp_path / cut) / "manifest.json").read_text())
        video, audio = av_offsets_us(clip_of(package), first_us + round(manifest["clip"]["start_s"] * 1e6))
        assert len(audio) == 8, f"{cut}: the ticks of seconds 1 to 8 are heard"  # 0's has no beginning in the clip
        assert max(abs(a) for a in audio) < 1_000, f"{cut}: ticks heard off their second (µs): {audio}"


@pytest.mark.parametrize("exact", [False, True], ids=["keyframe-cut", "exact-cut"])
def test_the_clip_shows_nothing_outside_the_approved_range(recorded, tmp_path, exact):
    package = tmp_path / "clip.zip"
    assert export(recorded, package, *(["--exact"] if exact else []), start="2.4", end="6.6") == 0
    # Each frame's capture time, read from the picture itself (the barcode the sensor burned in).
    seconds = [(t - recorded["origin_us"]) / 1e6 for t in decode(clip_of(package)).frame_times_us if t is not None]
    assert seconds and min(seconds) >= 2.4 - 1e-3 and max(seconds) < 6.6
    # Where it starts, against the frames the device stored (a loaded machine's simulated sensor
    # may have dropped some, and an encoder counts its keyframe interval in frames, as a Pi's does).
    frames = stored_frames(recorded)
    first = min(t for t, key in frames if t >= 2.4 - 1e-3 and (key or exact))
    assert min(seconds) == pytest.approx(first, abs=1e-3), \
        "the first frame of the range" if exact else "the first keyframe of the range"
    manifest = json.loads((unpack(package, tmp_path / "u") / "manifest.json").read_text())
    assert manifest["clip"]["start_s"] == pytest.approx(min(seconds), abs=0.01)
    assert manifest["clip"]["cut"].startswith("re-encoded" if exact else "keyframe")


def test_a_recipient_checks_the_package_with_standard_tools(recorded, tmp_path):
    package = tmp_path / "p.zip"
    assert export(recorded, package) == 0
    folder = unpack(package, tmp_path / "u")
    manifest = json.loads((folder / "manifest.json").read_text())

    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", "device-key.pem", "-outform", "DER"], cwd=folder,
                         capture_output=True, check=True).stdout
    assert subprocess.run(["sha256sum"], input=der, capture_output=True).stdout.split()[0].decode() == \
        manifest["device"]["key_sha256"]
    signed = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "device-key.pem", "-rawin",
                             "-in", "manifest.json", "-sigfile", "manifest.sig"], cwd=folder, capture_output=True,
                            text=True)
    assert signed.returncode == 0 and "Signature Verified Successfully" in signed.stdout
    sums = subprocess.run(["sha256sum", *manifest["files"]], cwd=folder, capture_output=True, text=True, check=True)
    assert {line.split()[1]: line.split()[0] for line in sums.stdout.splitlines()} == manifest["files"]
    # the cover sheet is a Japanese PDF carrying the key's fingerprint and the clip's hash
    text = subprocess.run(["pdftotext", "cover.pdf", "-"], cwd=folder, capture_output=True, text=True).stdout
    assert "記録の提供について" in text and manifest["device"]["key_sha256"] in text
    assert manifest["clip"]["sha256"] in text
    # and openssl catches a changed manifest
    (folder / "manifest.json").write_text((folder / "manifest.json").read_text().replace("北警察署", "南警察署"))
    assert subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "device-key.pem", "-rawin",
                           "-in", "manifest.json", "-sigfile", "manifest.sig"], cwd=folder,
                          capture_output=True).returncode != 0


def _age_decrypt_with_passphrase(sealed: Path, out: Path, passphrase: str) -> int:
    """The standard age tool reads a passphrase only from a terminal: give it one."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("age", ["age", "-d", "-o", str(out), str(sealed)])
    transcript = b""
    while b"passphrase" not in transcript.lower():
        transcript += os.read(fd, 1024)
    os.write(fd, passphrase.encode() + b"\n")
    try:
        while os.read(fd, 1024):
            pass
    except OSError:
        pass
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_package_sealed_for_transport_opens_with_the_age_tool_and_the_passphrase(recorded, tmp_path, capsys):
    (tmp_path / "transport.txt").write_text("sorezore betsu no michi de\n")
    sealed = tmp_path / "p.zip.age"
    assert export(recorded, sealed, "--seal-passphrase-file", str(tmp_path / "transport.txt")) == 0
    assert not zipfile.is_zipfile(sealed) and sealed.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert verify(sealed) == 2
    assert "sealed for transport" in capsys.readouterr().err
    (tmp_path / "wrong.txt").write_text("guess\n")
    assert verify(sealed, "--passphrase-file", tmp_path / "wrong.txt") == 2
    assert "passphrase does not open" in capsys.readouterr().err
    assert verify(sealed, "--passphrase-file", tmp_path / "transport.txt") == 0

    assert _age_decrypt_with_passphrase(sealed, tmp_path / "opened.zip", "sorezore betsu no michi de") == 0
    assert verify(tmp_path / "opened.zip") == 0


def test_every_export_is_in_the_audit_log_and_the_package_proves_it(recorded, tmp_path, capsys):
    package = tmp_path / "p.zip"
    assert export(recorded, package, key=["--manager", "kanri", "--password-file",
                                          str(recorded["root"] / "pass.txt")]) == 0
    capsys.readouterr()
    folder = unpack(package, tmp_path / "u")
    import hashlib

    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert main(["audit", "--data", str(recorded["data"]), "--json", "log", "--actor", "kanri"]) == 0
    entries = json.loads(capsys.readouterr().out)
    logged = [e for e in entries if e["action"] == "export.create" and e["detail"]["manifest_sha256"] == digest]
    assert logged and logged[0]["purpose"] == "provision" and logged[0]["detail"]["ground"] == "investigation"
    assert main(["audit", "--data", str(recorded["data"]), "verify"]) == 0
    # the proof in the package checks offline against the device's verifier key
    assert main(["audit", "check-proof", str(folder / "audit-proof.json"), "--vkey", str(folder / "device.vkey")]) == 0
    assert f"entry {logged[0]['seq']}" in capsys.readouterr().out


def test_mute_and_blur_change_only_what_was_asked(recorded, tmp_path):
    plain, redacted = tmp_path / "plain.zip", tmp_path / "redacted.zip"
    assert export(recorded, plain, "--exact") == 0
    assert export(recorded, redacted, "--mute", "3-5", "--blur", "0.5,0.4,0.3,0.3") == 0
    ticks_plain = [2 + t for t in _ticks(clip_of(plain))]
    ticks_redacted = [2 + t for t in _ticks(clip_of(redacted))]
    assert any(3 <= t < 5 for t in ticks_plain)  # the microphone ticks every second…
    assert not any(3 <= t < 5 for t in ticks_redacted)  # …but not where it was muted
    # elsewhere the same ticks; a tick straddling an edge of the span keeps its part outside it.
    # (One at the range's end, 7 s, is heard or not by how the range's last frame falls: the
    # exact cut ends on it, the keyframe cut a frame on. Neither is the mute's doing.)
    def away_from_the_edges(ticks):
        return [round(t) for t in ticks if not 2.9 <= t < 5.1 and t < 6.9]

    assert away_from_the_edges(ticks_redacted) == away_from_the_edges(ticks_plain)

    a, b = _frame(clip_of(plain), 30), _frame(clip_of(redacted), 30)
    h, w = a.shape
    box = (slice(int(0.4 * h) + 4, int(0.7 * h) - 4), slice(int(0.5 * w) + 4, int(0.8 * w) - 4))
    outside = np.ones_like(a, bool)
    outside[int(0.4 * h) - 8:int(0.7 * h) + 8, int(0.5 * w) - 8:int(0.8 * w) + 8] = False
    assert np.abs(a.astype(int) - b.astype(int))[outside].mean() < 2  # the rest of the picture is as it was
    # inside, a coarse mosaic: few distinct rows of detail left
    assert len({tuple(r) for r in b[box][:, ::4]}) < len({tuple(r) for r in a[box][:, ::4]}) or \
        np.abs(np.diff(b[box].astype(int), axis=1)).mean() < np.abs(np.diff(a[box].astype(int), axis=1)).mean()


def test_blur_faces_hides_the_visitor_at_the_counter(recorded, tmp_path):
    from firmware.export.redact import FaceDetector

    plain, redacted = tmp_path / "plain.zip", tmp_path / "faces.zip"
    assert export(recorded, plain, "--exact", end="4") == 0
    assert export(recorded, redacted, "--blur-faces", end="4") == 0
    detector = FaceDetector()
    seen_plain = [bool(detector.detect(f)) for f in _frames(clip_of(plain))]
    seen_redacted = [bool(detector.detect(f)) for f in _frames(clip_of(redacted))]
    assert sum(seen_plain) >= len(seen_plain) * 0.8  # the simulated visitor is a face the detector finds
    assert not any(seen_redacted)
    manifest = json.loads((unpack(redacted, tmp_path / "u") / "manifest.json").read_text())
    assert manifest["redactions"]["faces"] and manifest["redactions"]["faces_found"] > 0


@pytest.mark.parametrize("args, message", [
    (["--recording", "20990101-000000-000"], "no recording"),
    (["--start", "30", "--end", "40"], "only"),
    (["--start", "5", "--end", "3"], "empty or negative"),
    (["--ground", "7"], "unknown ground"),
    (["--blur", "0.9,0.9,0.5,0.5"], "not inside the picture"),
])
def test_a_request_that_cannot_be_exported_is_refused_plainly(recorded, tmp_path, capsys, args, message):
    out = tmp_path / "p.zip"
    base = {"--recording": recorded["recording"], "--start": "2", "--end": "7", "--ground": "3"}
    argv = ["export", "--data", str(recorded["data"]), "--recovery-key", str(recorded["recovery"]),
            "--recipient", "x", "--reference", "y", "--out", str(out)]
    given = dict(zip(args[::2], args[1::2]))
    for flag, value in {**base, **given}.items():
        argv += [flag, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_wrong_keys_places_and_missing_paperwork_write_nothing(recorded, tmp_path, capsys):
    (tmp_path / "wrong.txt").write_text("not it\n")
    assert export(recorded, tmp_path / "a.zip", key=["--manager", "kanri", "--password-file",
                                                     str(tmp_path / "wrong.txt")]) == 1
    assert "passphrase" in capsys.readouterr().err
    assert export(recorded, recorded["data"] / "inside.zip") == 2
    assert "inside the data folder" in capsys.readouterr().err
    (tmp_path / "taken.zip").write_bytes(b"someone else's file")
    assert export(recorded, tmp_path / "taken.zip") == 2
    assert (tmp_path / "taken.zip").read_bytes() == b"someone else's file"
    argv = ["export", "--data", str(recorded["data"]), "--recovery-key", str(recorded["recovery"]), "--recording",
            recorded["recording"], "--start", "2", "--end", "7", "--ground", "investigation", "--recipient", "x",
            "--out", str(tmp_path / "b.zip")]
    assert main(argv) == 2
    assert "Art. 11(2)" in capsys.readouterr().err
    # only an urgent provision may go before its paperwork
    assert main([*argv[:-4], "--ground", "urgent", "--recipient", "x", "--out", str(tmp_path / "b.zip")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zip", "taken.zip", "wrong.txt"]
    assert not (recorded["data"] / "inside.zip").exists()


def _ticks(clip: bytes) -> list[float]:
    import av

    with av.open(io.BytesIO(clip)) as c:
        rate = c.streams.audio[0].rate
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    return list(tick_onsets((pcm * 32767).astype(np.int16)[:, None], rate))


def _frames(clip: bytes):
    import av

    with av.open(io.BytesIO(clip)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="gray")


def _frame(clip: bytes, n: int) -> np.ndarray:
    for i, f in enumerate(_frames(clip)):
        if i == n:
            return f
    raise AssertionError(f"the clip has fewer than {n + 1} frames")


def test_the_cover_sheet_is_the_same_made_aside_or_here_and_a_failed_printer_says_why(recorded, tmp_path,
                                                                                       monkeypatch):
    from firmware.export import cover

    package = tmp_path / "p.zip"
    assert export(recorded, package) == 0
    manifest = json.loads((unpack(package, tmp_path / "u") / "manifest.json").read_text())

    def text(pdf: bytes) -> str:
        return subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()

    with cover.Printer() as printer:
        aside = printer.sheet(manifest)
    assert text(aside) == text(cover.sheet(manifest))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    with cover.Printer() as printer:  # cannot start a second process: made here instead
        assert text(printer.sheet(manifest)) == text(aside)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with cover.Printer() as printer, pytest.raises(ExportError, match="cover sheet could not be made"):
        printer.sheet(manifest)
