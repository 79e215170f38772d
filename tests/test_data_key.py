"""image-build's data-key on a Pi: the data partition's key from the firmware's HMAC under the
board's OTP key, run against a double of Raspberry Pi's rpi-fw-crypto (tests/doubles/bin).

What matters on a real board: the key is the same at every boot, an unprogrammed board is
programmed once (and only when image.conf allows it), and no other failure — a locked key, a
missing tool — ever programs the OTP, which cannot be undone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_KEY = REPO / "image-build/overlay/usr/lib/kiroku/data-key"
DOUBLES = REPO / "tests/doubles/bin"
LABEL = b"kiroku data partition v1"


class Board:
    def __init__(self, tmp: Path, otp: str | None = None, provision: str = "yes", locks: str = ""):
        self.otp, self.log, self.conf = tmp / "otp", tmp / "calls", tmp / "image.conf"
        self.last_error = tmp / "firmware-last-error"
        self.key = tmp / "run/kiroku/data.key"
        if otp is not None:
            self.otp.write_text(otp)
        self.conf.write_text(f"KEY_SOURCE=otp\nOTP_PROVISION={provision}\nDATA_PARTITION=3\n")
        self.env = {"PATH": f"{DOUBLES}:/usr/bin:/bin", "KIROKU_IMAGE_CONF": str(self.conf),
                    "RPI_FW_CRYPTO_DOUBLE_OTP": str(self.otp), "RPI_FW_CRYPTO_DOUBLE_LOG": str(self.log),
                    "RPI_FW_CRYPTO_DOUBLE_LOCKS": locks, "RPI_FW_CRYPTO_DOUBLE_LAST_ERROR": str(self.last_error)}

    def boot(self, **env) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", DATA_KEY, self.key], env={**self.env, **env}, capture_output=True, text=True)

    def calls(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def expected(self) -> str:
        return hmac.new(bytes.fromhex(self.otp.read_text()), LABEL, hashlib.sha256).hexdigest()


PROGRAMMED = "5e" * 32


def test_a_programmed_board_gives_the_same_key_at_every_boot_and_is_never_programmed_again(tmp_path):
    board = Board(tmp_path, PROGRAMMED)

    first = board.boot()
    key = board.key.read_text()
    second = board.boot()

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert key == board.expected() == board.key.read_text(), "the firmware's HMAC of the label, the same each boot"
    assert board.calls() == ["hmac", "hmac"]
    assert board.otp.read_text() == PROGRAMMED
    assert board.key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in board.key.parent.iterdir()) == ["data.key"], "nothing half-written left in /run"


def test_a_blank_board_is_programmed_once_by_the_firmware_then_derives_its_key(tmp_path):
    board = Board(tmp_path)  # never programmed: the slot reads as zeros

    first = board.boot()

    assert first.returncode == 0, first.stderr
    assert "programming this board's OTP device key" in first.stderr
    assert board.calls() == ["hmac", "genkey", "hmac"]
    assert board.otp.read_text() != "00" * 32 and board.key.read_text() == board.expected()
    key = board.key.read_text()
    assert board.boot().returncode == 0 and board.key.read_text() == key
    assert board.calls().count("genkey") == 1, "programmed once, never again"


def test_a_blank_board_is_left_alone_when_the_image_says_so(tmp_path):
    board = Board(tmp_path, provision="no")

    result = board.boot()

    assert result.returncode != 0
    assert "not programmed and OTP_PROVISION is not yes" in result.stderr
    assert "genkey" not in board.calls() and not board.otp.exists()
    assert not board.key.exists()


def test_a_locked_hmac_does_not_program_the_otp_and_says_what_failed(tmp_path):
    board = Board(tmp_path, PROGRAMMED, locks="HMAC_LOCKED")

    result = board.boot()

    assert result.returncode != 0
    assert "exit 252" in result.stderr and "Key is locked" in result.stderr, result.stderr
    assert "genkey" not in board.calls(), "only a key the firmware reports as not set is programmed"
    assert not board.key.exists() and not list(board.key.parent.iterdir())


def test_a_kernel_without_the_firmwares_mailbox_programs_nothing(tmp_path):
    board = Board(tmp_path)  # blank, but nobody can tell

    result = board.boot(RPI_FW_CRYPTO_DOUBLE_NO_FIRMWARE="1")

    assert result.returncode != 0 and "exit 1:" in result.stderr and "/dev/vcio_crypto" in result.stderr
    assert board.calls() == ["hmac"] and not board.otp.exists() and not board.key.exists()


def test_an_older_rpi_fw_crypto_still_gets_a_blank_board_programmed(tmp_path):
    board = Board(tmp_path)  # before May 2026 the tool exited 255 after any firmware error

    result = board.boot(RPI_FW_CRYPTO_DOUBLE_OLD="1")

    assert result.returncode == 0, result.stderr
    assert board.calls() == ["hmac", "genkey", "hmac"] and board.key.read_text() == board.expected()


def test_an_exit_code_without_the_firmwares_words_programs_nothing(tmp_path):
    board = Board(tmp_path)
    board.last_error.write_text("0")  # a failure of the tool's own, the firmware reporting none
    (tmp_path / "fake").mkdir()
    fake = tmp_path / "fake/rpi-fw-crypto"
    fake.write_text("#!/bin/sh\necho \"$*\" >> \"$RPI_FW_CRYPTO_DOUBLE_LOG\"\nexit 250\n")
    fake.chmod(0o755)

    result = board.boot(PATH=f"{fake.parent}:/usr/bin:/bin")

    assert result.returncode != 0 and "exit 250" in result.stderr
    assert board.calls() == ["hmac"], "exit 250 alone, without 'Last crypto error: 6', is not a blank key"


def test_a_firmware_that_will_not_generate_the_key_is_reported(tmp_path):
    board = Board(tmp_path, locks="GEN_LOCKED")

    result = board.boot()

    assert result.returncode != 0 and "could not program the OTP device key" in result.stderr
    assert not board.key.exists()


def test_an_image_without_rpi_fw_crypto_names_the_package(tmp_path):
    board = Board(tmp_path, PROGRAMMED)

    result = board.boot(PATH="/usr/bin:/bin")

    assert result.returncode != 0 and "rpifwcrypto package" in result.stderr
    assert not board.key.exists()


def test_the_boot_tests_key_file_stands_in_for_the_firmware(tmp_path):
    board = Board(tmp_path)
    (tmp_path / "key").write_text("k" * 64)
    board.conf.write_text(f"KEY_SOURCE=file:{tmp_path / 'key'}\n")

    assert board.boot().returncode == 0
    assert board.key.read_text() == "k" * 64 and board.calls() == []


def test_the_image_installs_rpi_fw_crypto():
    packages = (REPO / "image-build/packages.txt").read_text().split()
    assert "rpifwcrypto" in packages, "data-key needs Raspberry Pi's rpi-fw-crypto on the image"
    assert os.access(DATA_KEY, os.X_OK)
