"""The viewing page's cut of a segment (firmware.media.cut.trim), heard and seen: nothing from
outside the approved range, nothing lost inside it."""

from __future__ import annotations

import io

import av
import pytest

from firmware import clock
from firmware.media.cut import trim
from tests.helpers import decode, lay_down


@pytest.fixture
def segment(vault, config, recovery) -> bytes:
    """A whole 2-s segment from inside a recording, with its sound, decrypted."""
    first_us = (clock.boottime_us() // 1_000_000 - 20) * 1_000_000
    recording = lay_down(vault, config, seconds=5, first_us=first_us)
    info = vault.segments(recording)[1]
    assert info.duration == pytest.approx(2.0) and info.audio_samples
    return vault.open_segment_plaintext(info, recovery)


def sound_span(mp4: bytes) -> tuple[float, float]:
    """Where the decoded sound starts and ends, in the file's seconds (any channels)."""
    with av.open(io.BytesIO(mp4)) as c:
        frames = [(float(f.pts * f.time_base), f.samples, f.sample_rate) for f in c.decode(audio=0)]
    return frames[0][0], frames[0][0] + sum(n for _, n, _ in frames) / frames[0][2]


@pytest.mark.parametrize("keep_to", [0.3, 0.51, 1.05, 1.77])
def test_a_range_that_ends_inside_a_segment_is_heard_no_further_than_its_end(segment, keep_to):
    part, begins = trim(segment, 0.0, keep_to)
    assert begins == 0.0
    first, last = sound_span(part)
    # An AAC frame is 1024 samples (21.3 ms): a frame that began inside the range went on past
    # it, so the viewer heard up to 21 ms recorded after the approved end.
    assert last <= keep_to + 1e-4, f"sound until {last:.4f} s, the range ends at {keep_to} s"
    assert last > keep_to - 0.022, "more than a frame of the range's sound was lost"
    assert max(decode(part).frame_pts_us) < keep_to * 1e6


def test_a_range_that_runs_to_the_segments_end_keeps_all_its_sound(segment):
    _, whole_end = sound_span(segment)
    part, begins = trim(segment, 1.0)
    assert begins == pytest.approx(1.0)
    first, last = sound_span(part)
    assert first >= 0.0
    assert last == pytest.approx(whole_end - begins, abs=1e-3), "the sound at the segment's end was cut"


def test_a_calls_sound_is_cut_in_its_own_frames_and_kept_to_the_segments_end(tmp_path, vault, recovery):
    """A call is sound alone at 16 kHz, where an AAC frame plays 64 ms."""
    from firmware.calls import synth
    from tests.calls_helpers import calls, capture_of, replay, write_pcap
    from tests.conftest import small_config

    script = synth.Script("call-cut@trunk.example", "inbound", *synth.trunk_pair(0), talk=5.0)
    replay(vault, small_config(calls={"segment_seconds": 2.0}), write_pcap(tmp_path / "trunk.pcap", capture_of([script])))
    info = vault.segments(calls(vault)[script.call_id]["recording_id"])[0]
    call = vault.open_segment_plaintext(info, recovery)
    _, whole_end = sound_span(call)
    part, begins = trim(call, 0.2, 0.9)
    first, last = sound_span(part)
    assert 0.2 <= begins < 0.2 + 0.065
    assert last <= 0.9 - begins + 1e-4, f"sound until {begins + last:.4f} s in the segment, the range ends at 0.9 s"
    assert last > 0.9 - begins - 0.065, "more than a frame of the range's sound was lost"
    part, begins = trim(call, 0.2)
    assert begins + sound_span(part)[1] == pytest.approx(whole_end, abs=1e-3), "the sound at the segment's end was cut"
