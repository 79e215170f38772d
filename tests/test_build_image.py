"""image-build/build-image's own checks, before it hands over to rpi-image-gen (which needs an
arm64 release machine and Raspberry Pi's archive): the console login's password is never a
default, a hash that is not one is refused, and the hash is left nowhere after the build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
YESCRYPT = "$y$j9T$Yq2b9i4cQ0mH3ZcVb1n1P.$7oR3u8Wc4r0bm6zH5mX9Q9s0dT6l1Fv0kNq2P3a4b5C"
SHA512 = "$6$saltsalt$" + "a" * 86


@pytest.fixture
def checkout(tmp_path):
    """A committed checkout with build-image and a release key, and a git that stops at the
    clone of rpi-image-gen, saying what it found of the password file."""
    repo = tmp_path / "kiroku"
    (repo / "image-build/overlay/etc/kiroku").mkdir(parents=True)
    shutil.copy2(REPO / "image-build/build-image", repo / "image-build/build-image")
    (repo / "image-build/overlay/etc/kiroku/release-key.pub").write_text("a public key\n")
    (repo / ".gitignore").write_text("image-build/build/\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", repo, *args], check=True, env=env)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_git = shutil.which("git")
    (bin_dir / "git").write_text(f"""#!/bin/sh
if [ "$1" = clone ]; then
    f={repo}/image-build/build/console.passhash
    stat -c %a "$f" > {tmp_path}/seen-mode && cat "$f" > {tmp_path}/seen-hash
    echo "test: no network" >&2; exit 1
fi
exec {real_git} "$@"
""")
    (bin_dir / "git").chmod(0o755)
    return repo, {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def build(checkout, passhash: str | None) -> subprocess.CompletedProcess:
    repo, env = checkout
    env = {k: v for k, v in env.items() if k != "KIROKU_CONSOLE_PASSHASH"}
    if passhash is not None:
        env["KIROKU_CONSOLE_PASSHASH"] = passhash
    return subprocess.run(["sh", repo / "image-build/build-image", "pi5"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)


def test_without_a_terminal_or_a_hash_there_is_no_password_and_no_build(checkout):
    result = build(checkout, None)

    assert result.returncode == 1
    assert "no password for the console's kiroku-admin" in result.stderr and "mkpasswd -m yescrypt" in result.stderr
    assert not (checkout[0] / "image-build/build/console.passhash").exists()


@pytest.mark.parametrize("passhash", ["hunter2hunter2", "$1$md5$short", f"{SHA512}\nroot::0:0::/root:/bin/sh",
                                      "$6$salt:with:colons", ""], ids=["plain", "md5", "two lines", "colons", "empty"])
def test_what_is_not_a_yescrypt_or_sha512_hash_is_refused(checkout, passhash):
    result = build(checkout, passhash)

    assert result.returncode == 1
    expected = "no password" if passhash == "" else "is not a yescrypt or SHA-512 crypt(3) hash"
    assert expected in result.stderr, result.stderr
    assert not (checkout[0] / "image-build/build").exists(), "nothing written for a refused hash"


@pytest.mark.parametrize("passhash", [YESCRYPT, SHA512], ids=["yescrypt", "sha512"])
def test_the_hash_reaches_the_build_in_a_private_file_that_is_gone_afterwards(checkout, passhash):
    repo, _ = checkout

    result = build(checkout, passhash)

    assert result.returncode != 0 and "test: no network" in result.stderr  # it got as far as rpi-image-gen
    seen = repo.parent
    assert (seen / "seen-mode").read_text().strip() == "600"
    assert (seen / "seen-hash").read_text() == passhash + "\n"
    assert not (repo / "image-build/build/console.passhash").exists(), "the hash is removed when the build ends"
    assert passhash not in result.stderr + result.stdout
