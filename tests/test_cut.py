"""The viewing page's cut of a segment (firmware.cut.trim), heard and seen: nothing from
outside the approved range, nothing lost inside it."""

from __future__ import annotations

import pytest

from firmware import clock
from firmware.cut import trim
from tests.helpers import _sound, decode, lay_down


@pytest.fixture
def segment(vault, config, recovery) -> bytes:
    """A whole 2-s segment from inside a recording, with its sound, decrypted."""
    first_us = (clock.boottime_us() // 1_000_000 - 20) * 1_000_000
    recording = lay_down(vault, config, seconds=5, first_us=first_us)
    info = vault.segments(recording)[1]
    assert info.duration == pytest.approx(2.0) and info.audio_samples
    return vault.open_segment_plaintext(info, recovery)


def sound_span(mp4: bytes) -> tuple[float, float]:
    first, pcm, rate = _sound(mp4)
    return first, first + len(pcm) / rate


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
