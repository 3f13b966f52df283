"""The host agent's boot (dsh.remote.hostboot): BOOT and STAGE1 under a real `sh -s`,
stage 2 in each of its forms, with a stand-in agent package."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.remote import hostboot, spool

SERVE = """import os
from . import wire

def main(tag):
    os.write(1, ("served %s %s %s\\n" % (tag, wire.WORD, __package__)).encode())
"""


@pytest.fixture
def agent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "hostagent"
    folder.mkdir()
    (folder / "__init__.py").write_text('PROTOCOL = 1\nMODULES = ("wire", "serve")\n')
    (folder / "wire.py").write_text('WORD = "framed"\n')
    (folder / "serve.py").write_text(SERVE)
    monkeypatch.setattr(hostboot, "AGENT_DIR", folder)
    hostboot.stage2.cache_clear()
    yield folder
    hostboot.stage2.cache_clear()


def boot(path: str, stage2: bool, magic: str | None = None, compress: bool = True) -> tuple[bytes, str]:
    """Run the boot exec as sh -s (PATH: `path`); send stage 2 after the hello."""
    argv = hostboot.boot_argv()
    tag = spool.tag_of(argv)
    proc = subprocess.Popen(
        ["sh", "-s"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": path, "HOME": os.environ.get("HOME", "/root")},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(spool.as_stdin(argv).encode())
    proc.stdin.flush()
    first = proc.stdout.readline()
    hello = hostboot.parse_hello0(tag, first)
    assert hello is not None, first
    if stage2 and not hello.refusal:
        proc.stdin.write(hostboot.stage2(magic or hello.magic, compress and hello.zlib))
        proc.stdin.flush()
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    return first + rest, tag


@pytest.mark.parametrize(
    "magic, compress", [(None, True), (None, False), ("00000000", True), ("00000000", False)]
)
def test_stage2_runs_the_package_in_every_form(agent_dir: Path, magic: str | None, compress: bool) -> None:
    out, tag = boot(os.environ["PATH"], True, magic, compress)
    lines = out.decode().splitlines()
    assert lines[0].startswith(f"{tag} agent0 3.") and lines[1] == f"served {tag} framed dshagent", lines


def test_no_python3_says_none_and_nothing_else(agent_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    found = shutil.which("sh", path="/usr/bin:/bin")
    assert found
    (bare / "sh").symlink_to(found)
    out, tag = boot(str(bare), True)
    assert out == f"{tag} agent none\n".encode()
    assert hostboot.parse_hello0(tag, out) == hostboot.Hello0(refusal="none")


def test_hello_lines_are_read_strictly() -> None:
    assert hostboot.parse_hello0("t", b"t agent0 3.11.2 a70d0d0a 1\n") == hostboot.Hello0(
        "3.11.2", "a70d0d0a", True
    )
    assert hostboot.parse_hello0("t", b"t agent old 3.5\n") == hostboot.Hello0(refusal="old 3.5")
    assert hostboot.parse_hello0("t", b"t agent0 junk\n") == hostboot.Hello0(refusal="a malformed hello")
    assert hostboot.parse_hello0("t", b"motd t agent0 3.11.2 a 1\n") is None


def test_the_scripts_stay_small_and_stage1_has_no_single_quote() -> None:
    assert "'" not in hostboot.STAGE1
    assert len(hostboot.STAGE1.encode()) < 1024
    assert len(hostboot.BOOT.encode()) < 512
