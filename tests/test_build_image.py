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
    """A committed checkout with build-image and a release key, and, in place of the network and
    of rpi-image-gen, a git whose clone makes a stand-in rpi-image-gen that notes what it was given
    (its arguments, the password file's mode and content) and then does what FAKE_RIG says: fail,
    or have the build stopped by SIGTERM or SIGHUP."""
    repo = tmp_path / "kiroku"
    (repo / "image-build/overlay/etc/kiroku").mkdir(parents=True)
    shutil.copy2(REPO / "image-build/build-image", repo / "image-build/build-image")
    (repo / "image-build/overlay/etc/kiroku/release-key.pub").write_text("a public key\n")
    (repo / ".gitignore").write_text("image-build/build/\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example", "SEEN": str(tmp_path), "FAKE_RIG": "fail"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", repo, *args], check=True, env=env)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rig = """#!/bin/sh
printf '%s\\n' "$@" > "$SEEN/seen-args"
for arg; do case "$arg" in IGconf_kiroku_console=*)
    f=${arg#*=}; stat -c %a "$f" > "$SEEN/seen-mode"; cat "$f" > "$SEEN/seen-hash";; esac; done
env > "$SEEN/seen-env"
case "$FAKE_RIG" in
    term) kill -TERM "$PPID"; sleep 1 ;;
    hup) kill -HUP "$PPID"; sleep 1 ;;
esac
exit 1
"""
    (bin_dir / "git").write_text(f"""#!/bin/sh
case "$1" in
    clone) mkdir -p "$4/.git" && printf '#!/bin/sh\\nexit 0\\n' > "$4/install_deps.sh" &&
           cat > "$4/rpi-image-gen" <<'EOF2'
{rig}EOF2
           chmod +x "$4/install_deps.sh" "$4/rpi-image-gen"; exit 0 ;;
    -C) case "$3" in fetch|checkout) exit 0 ;; esac ;;
esac
exec {shutil.which("git")} "$@"
""")
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in ("git", "sudo"):
        (bin_dir / tool).chmod(0o755)
    return repo, {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def build(checkout, passhash: str | None) -> subprocess.CompletedProcess:
    repo, env = checkout
    env = {k: v for k, v in env.items() if k != "KIROKU_CONSOLE_PASSHASH"}
    if passhash is not None:
        env["KIROKU_CONSOLE_PASSHASH"] = passhash
    return subprocess.run(["sh", repo / "image-build/build-image", "pi5"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)


def left(repo: Path) -> list[str]:
    build_dir = repo / "image-build/build"
    return sorted(p.name for p in build_dir.glob("console.passhash*")) if build_dir.exists() else []


def test_without_a_terminal_or_a_hash_there_is_no_password_and_no_build(checkout):
    result = build(checkout, None)

    assert result.returncode == 1
    assert "no password for the console's kiroku-admin" in result.stderr and "mkpasswd -m yescrypt" in result.stderr
    assert not left(checkout[0])


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

    assert result.returncode == 1, result.stderr  # rpi-image-gen (the stand-in) failed
    seen = repo.parent
    args = (seen / "seen-args").read_text().splitlines()
    assert "IGconf_device_user1=kiroku-admin" in args and "IGconf_device_user1sudo=passwd" in args
    assert not any(passhash in arg for arg in args), "the hash is never on rpi-image-gen's command line"
    assert (seen / "seen-mode").read_text().strip() == "600"
    assert (seen / "seen-hash").read_text() == passhash + "\n"
    assert "KIROKU_CONSOLE_PASSHASH" not in (seen / "seen-env").read_text(), "nor in the build's environment"
    assert not left(repo), "the hash is removed when the build ends"
    assert passhash not in result.stderr + result.stdout


@pytest.mark.parametrize("how", ["term", "hup"])
def test_a_build_stopped_by_a_signal_leaves_no_hash_behind(checkout, how):
    repo, env = checkout
    env["FAKE_RIG"] = how

    result = build((repo, env), YESCRYPT)

    assert result.returncode != 0, result.stderr  # 129 or 143, or 1 when the stand-in's own exit came first
    assert (repo.parent / "seen-hash").read_text() == YESCRYPT + "\n", "it got as far as rpi-image-gen"
    assert not left(repo), "a closed terminal or a kill still removes the hash"


def password_hook() -> str:
    """The layer's hook that sets the console login's password (rpi-image-gen runs each
    customize hook with the root file system as $1)."""
    text = (REPO / "image-build/rpi-image-gen/layer/kiroku.yaml").read_text()
    hooks = text.split("customize-hooks:\n", 1)[1].split("    - |-\n")[1:]
    [hook] = [h for h in hooks if "chpasswd" in h]
    return "\n".join(line[6:] for line in hook.splitlines())


@pytest.fixture
def image_root(tmp_path):
    """A root whose chroot runs chpasswd -e and getent shadow against one shadow file."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "shadow").write_text("kiroku-admin:!:20000::::::\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chroot").write_text("""#!/bin/sh
root=$1; shift
case "$1 $2" in
    "chpasswd -e") IFS=: read -r user hash; echo "$user:$hash:20000::::::" > "$root/shadow"; echo set >> "$root/calls" ;;
    "getent shadow") grep "^$3:" "$root/shadow" ;;
    *) exit 99 ;;
esac
""")
    (bin_dir / "chroot").chmod(0o755)
    return root, {"PATH": f"{bin_dir}:/usr/bin:/bin", "IGconf_device_user1": "kiroku-admin"}


def test_the_layer_sets_the_console_password_from_the_file(image_root, tmp_path):
    root, env = image_root
    (tmp_path / "hash").write_text(YESCRYPT + "\n")

    result = subprocess.run(["sh", "-c", password_hook(), "hook", root],
                            env={**env, "IGconf_kiroku_console": str(tmp_path / "hash")}, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert (root / "shadow").read_text().split(":")[1] == YESCRYPT


@pytest.mark.parametrize("content", [None, "", "\n", "not a hash\n"], ids=["gone", "empty", "blank line", "text"])
def test_the_layer_never_sets_an_empty_or_odd_password(image_root, tmp_path, content):
    root, env = image_root
    if content is not None:
        (tmp_path / "hash").write_text(content)

    result = subprocess.run(["sh", "-c", password_hook(), "hook", root],
                            env={**env, "IGconf_kiroku_console": str(tmp_path / "hash")}, capture_output=True, text=True)

    assert result.returncode != 0, "the build stops"
    assert not (root / "calls").exists(), "chpasswd never ran: an empty field would let anyone in"
    assert (root / "shadow").read_text().split(":")[1] == "!"
