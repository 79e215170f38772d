"""Configuration: validated once, typos refused with their location, defaults shipped as a file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from firmware.config import DEFAULT_FILE, Config, ConfigError, from_dict, load


def test_the_shipped_default_file_is_exactly_the_defaults():
    assert load(DEFAULT_FILE) == Config()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"camera": {"widht": 640}}, "unknown key camera.widht"),
        ({"camra": {}}, "unknown section [camra]"),
        ({"notice": {"delay": 0.1}}, "notice.delay: 0.1 is outside 0.5…30.0"),
        ({"device": {"mode": "sometimes"}}, "device.mode: 'sometimes' is not one of on_demand, continuous"),
        ({"camera": {"width": "wide"}}, "camera.width: expected int"),
        ({"gpio": {"sign": "pin 7"}}, "gpio.sign: 'pin 7' does not match"),
        ({"camera": {"width": 641}}, "must be even"),
        ({"microphone": {"enabled": 1}}, "microphone.enabled: expected bool"),
    ],
)
def test_bad_values_are_refused_with_their_location(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        from_dict(data, source="kiroku.toml")


def test_integers_are_accepted_where_seconds_are_expected():
    assert from_dict({"notice": {"delay": 3}}).notice.delay == 3.0


def test_a_bad_config_file_stops_the_recorder_with_one_line(tmp_path):
    (tmp_path / "kiroku.toml").write_text("[notice]\ndelay = 99\n")
    out = subprocess.run([sys.executable, "-m", "kiroku", "recorder", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == f"kiroku: configuration: {tmp_path / 'kiroku.toml'}: notice.delay: 99.0 is outside 0.5…30.0"


def test_broken_toml_is_reported_not_raised(tmp_path):
    path = tmp_path / "kiroku.toml"
    path.write_text("[notice\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)
