"""The subcommand table: every subcommand that the usage, man/dsh.1 and the bash,
zsh and fish completions name has a handler, and every handler but dsh's own
hidden ones is named in each of them."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from dsh.cli.args import SUBCOMMANDS
from dsh.cli.table import COMMANDS, handler

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man" / "dsh.1"
BASH = ROOT / "completions" / "dsh.bash"
ZSH = ROOT / "completions" / "_dsh"
FISH = ROOT / "completions" / "dsh.fish"

PUBLIC = tuple(name for name in COMMANDS if not name.startswith("_"))


def man_subcommands() -> set[str]:
    """The first word of each item of the SUBCOMMANDS section, when it is a name."""
    text = MAN.read_text(encoding="utf-8")
    section = text.split("\n.SH SUBCOMMANDS\n", 1)[1].split("\n.SH ", 1)[0].splitlines()
    names: set[str] = set()
    for i, line in enumerate(section[:-1]):
        if line.startswith(".TP"):
            tag = re.sub(r"\\f[BIRP]|^\.B[I]? ", "", section[i + 1])
            word = tag.replace('"', "").split()[0]
            if re.fullmatch(r"[a-z]+", word):
                names.add(word)
    return names


def completed(path: Path) -> set[str]:
    """The subcommands a completion offers as such."""
    text = path.read_text(encoding="utf-8")
    if path == BASH:
        match = re.search(r'^_dsh_subcommands="([^"]*)"', text, re.M)
        assert match, "dsh.bash has no _dsh_subcommands"
        return set(match.group(1).split())
    if path == ZSH:
        match = re.search(r"'subcommands:subcommand:\(\((.*?)\)\)'", text)
        assert match, "_dsh has no subcommands spec"
        return set(re.findall(r"([a-z_]+)\\:", match.group(1)))
    return set(re.findall(r"-n __fish_dsh_wants_subcommand -a ([a-z_]+) ", text))


def test_the_usage_lists_the_table_in_its_order() -> None:
    assert SUBCOMMANDS == PUBLIC


def test_every_handler_takes_the_wiring_and_the_arguments() -> None:
    for name in COMMANDS:
        assert list(inspect.signature(handler(name)).parameters) == ["wiring", "rest"], name


def test_hidden_subcommands_are_dsh_s_own() -> None:
    assert set(COMMANDS) - set(PUBLIC) == {"_executor"}


def test_the_man_page_documents_every_handler_and_no_other_subcommand() -> None:
    assert man_subcommands() == set(PUBLIC)


@pytest.mark.parametrize("path", [BASH, ZSH, FISH], ids=["bash", "zsh", "fish"])
def test_each_completion_offers_every_handler_and_no_other_subcommand(path: Path) -> None:
    assert completed(path) == set(PUBLIC)
