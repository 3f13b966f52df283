"""The manual page and the shell completions stay in step with the command line.

The options come from `dsh --help` as the parser prints them, the subcommands
from dsh.cli's table and the exit codes from dsh.exits; man/dsh.1 and the bash,
zsh and fish completions must name every one of them.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsh import __version__
from dsh.cli.args import SUBCOMMANDS
from dsh.exits import Exit

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man" / "dsh.1"
BASH = ROOT / "completions" / "dsh.bash"
ZSH = ROOT / "completions" / "_dsh"
FISH = ROOT / "completions" / "dsh.fish"

_LONG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_SHORT = re.compile(r"(?<![\w-])-[a-zA-Z](?![\w-])")


@functools.cache
def help_text() -> str:
    r = subprocess.run(
        [sys.executable, "-m", "dsh", "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def help_options() -> tuple[set[str], set[str]]:
    """The long and short options listed under `options:` in `dsh --help`."""
    match = re.search(r"^options:\n(.*?)(?:\n\n|\Z)", help_text(), re.S | re.M)
    assert match, f"no options section in dsh --help:\n{help_text()}"
    names = [line.strip().split("  ")[0] for line in match.group(1).splitlines() if line.startswith("  -")]
    text = " ".join(names)
    long, short = set(_LONG.findall(text)), set(_SHORT.findall(text))
    assert {"--help", "--store", "--json", "--version"} <= long and {"-c", "-h"} <= short, text
    return long, short


def exit_codes() -> dict[str, int]:
    codes = {member.name: int(member) for member in Exit}
    assert codes.get("OK") == 0, "dsh.exits.Exit has no OK"
    return codes


# -- the manual page ------------------------------------------------------------


def plain(roff: str) -> str:
    """Roff text without the escapes the page uses for dashes, fonts and spacing."""
    text = re.sub(r"\\f(?:[BIRP]|\[[A-Z]*\])", "", roff)
    text = re.sub(r"\\\(lq|\\\(rq", '"', text)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\|", "").replace("\\e", "\\")


def man_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in MAN.read_text(encoding="utf-8").splitlines():
        if line.startswith(".SH "):
            current = sections.setdefault(line[4:].strip().strip('"'), [])
        else:
            current.append(line)
    return sections


def tags(lines: list[str]) -> list[str]:
    """The item tags (the line after each `.TP`) of a section, as plain text."""
    out = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            tag = lines[i + 1]
            if tag.startswith("."):
                tag = tag.split(None, 1)[1] if " " in tag else ""
            out.append(plain(tag).replace('"', ""))
    return out


def test_man_page_has_the_sections_of_a_manual_page() -> None:
    sections = man_sections()
    for name in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "SUBCOMMANDS",
        "ARGUMENTS",
        "ENVIRONMENT",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ):
        assert name in sections, f"man/dsh.1 has no {name} section"
    see_also = plain(" ".join(sections["SEE ALSO"]))
    assert re.search(r"\bdsh \(7\)", see_also), "SEE ALSO does not name dsh(7)"


def test_man_page_names_the_current_version() -> None:
    th = next(line for line in MAN.read_text(encoding="utf-8").splitlines() if line.startswith(".TH "))
    assert f'"dsh {__version__}"' in th, f"{th!r} does not name dsh {__version__}"


def test_every_option_of_dsh_help_is_an_item_of_the_man_page() -> None:
    long, short = help_options()
    described = " ".join(tags(man_sections()["OPTIONS"]))
    items = set(_LONG.findall(described)) | set(_SHORT.findall(described))
    assert long - items == set(), "options of dsh --help missing from OPTIONS in man/dsh.1"
    assert short - items == set(), "short options of dsh --help missing from OPTIONS in man/dsh.1"
    assert items - long - short == set(), "man/dsh.1 describes options that dsh --help does not list"


def test_every_subcommand_is_an_item_of_the_man_page() -> None:
    assert SUBCOMMANDS
    described = " ".join(tags(man_sections()["SUBCOMMANDS"]))
    for name in SUBCOMMANDS:
        assert re.search(rf"\b{re.escape(name)}\b", described), f"{name} is not in SUBCOMMANDS"


def test_every_exit_code_is_in_the_exit_status_section() -> None:
    listed = {int(t.split()[0]) for t in tags(man_sections()["EXIT STATUS"]) if t.split()}
    codes = exit_codes()
    missing = {name: value for name, value in codes.items() if value not in listed}
    assert missing == {}, "exit codes of dsh/exits.py missing from EXIT STATUS in man/dsh.1"
    assert listed - set(codes.values()) == set(), "man/dsh.1 lists exit codes dsh/exits.py does not have"


def test_man_page_names_the_environment_variables_the_code_reads() -> None:
    paths = [*sorted((ROOT / "dsh" / "cli").glob("*.py")), ROOT / "dsh" / "config.py"]
    source = "".join(path.read_text(encoding="utf-8") for path in paths)
    read = set(re.findall(r"""env(?:\.get\(|\[)["']([A-Z_]+)["']""", source))
    assert {"DSH_SESSION", "DSH_STORE", "DSH_CONFIG", "NO_COLOR"} <= read
    described = set(tags(man_sections()["ENVIRONMENT"]))
    assert read - {"HOME"} - described == set()


def test_man_page_renders_without_warnings() -> None:
    assert shutil.which("groff"), "groff is not installed (scripts/system-deps installs it)"
    r = subprocess.run(["groff", "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")


# -- the completions ------------------------------------------------------------


def _named(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", [BASH, ZSH], ids=["bash", "zsh"])
def test_bash_and_zsh_completions_name_every_option(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    long, short = help_options()
    missing = [o for o in sorted(long | short) if not _named(text, o)]
    assert missing == [], f"{path.name} does not complete {missing}"


def test_fish_completion_names_every_option() -> None:
    lines = [ln for ln in FISH.read_text(encoding="utf-8").splitlines() if ln.startswith("complete -c dsh ")]
    text = "\n".join(lines)
    long, short = help_options()
    missing = [o for o in sorted(long) if not _named(text, f"-l {o[2:]}")]
    missing += [o for o in sorted(short) if not _named(text, f"-s {o[1:]}")]
    assert missing == [], f"dsh.fish does not complete {missing}"


def test_zsh_completion_is_an_arguments_spec_for_dsh() -> None:
    text = ZSH.read_text(encoding="utf-8")
    assert text.startswith("#compdef dsh\n")
    assert "_arguments" in text


@pytest.mark.parametrize("path", [BASH, ZSH, FISH], ids=["bash", "zsh", "fish"])
def test_completions_name_every_subcommand(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for name in SUBCOMMANDS:
        assert re.search(rf"\b{re.escape(name)}\b", text), f"{path.name} does not complete {name}"


def bash_complete(*words: str, env: dict[str, str] | None = None) -> list[str]:
    """What the bash completion offers for the last of `words`, run in a real bash."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (
        f'source "$1"\n'
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        f'COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}\n'
        '_dsh 2>/dev/null; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script, "bash", str(BASH)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line]


def test_bash_offers_session_names_after_attach(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["--session", "completed-one", "-c", "true"]).returncode == 0
    assert bash_complete("dsh", "at", env=env) == ["attach"]
    assert "completed-one" in bash_complete("dsh", "attach", "", env=env)
    assert bash_complete("dsh", "attach", "compl", env=env) == ["completed-one"]


def test_bash_completes_a_long_option_prefix() -> None:
    assert bash_complete("dsh", "--st") == ["--store"]


def test_bash_offers_every_option_of_dsh_help() -> None:
    long, short = help_options()
    offered = set(bash_complete("dsh", "-"))
    assert (long | short) - offered == set()


def test_bash_offers_the_subcommands() -> None:
    for name in SUBCOMMANDS:
        assert name in bash_complete("dsh", name[:2])


def test_bash_offers_no_dsh_option_after_the_script() -> None:
    # what follows SCRIPT is the script's: file names, never dsh's options
    assert "--store" not in bash_complete("dsh", "script.dsh", "--st")
    assert "--json" in bash_complete("dsh", "-c", "echo $1", "--js")
    assert "--json" not in bash_complete("dsh", "-c", "echo $1", "--", "--js")


def test_bash_offers_store_urls() -> None:
    assert bash_complete("dsh", "--store", "") == ["local", "sqlite:///"]


@pytest.mark.parametrize(("shell", "path"), [("zsh", ZSH), ("fish", FISH)])
def test_zsh_and_fish_completions_parse(shell: str, path: Path) -> None:
    assert shutil.which(shell), f"{shell} is not installed (scripts/system-deps installs it)"
    r = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, "")


def test_fish_completes_a_long_option_prefix() -> None:
    assert shutil.which("fish"), "fish is not installed (scripts/system-deps installs it)"
    r = subprocess.run(
        ["fish", "--no-config", "-c", 'source $argv[1]; complete -C "dsh --st"', str(FISH)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["--store"]


def test_the_man_pages_are_in_the_wheel(tmp_path: Path) -> None:
    import sys
    import zipfile

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("dsh-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for page in ("share/man/man1/dsh.1", "share/man/man7/dsh.7"):
        assert any(n.endswith(".data/data/" + page) for n in names), page
