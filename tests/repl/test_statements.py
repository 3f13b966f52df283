"""The one statement reader (dsh.repl.statements) and lines read on the event loop
(dsh.repl.lines), as the client and the in-process driver use them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dsh.errors import IncompleteInput, LangError
from dsh.lang.compiler import compile_source
from dsh.lang.source import Source
from dsh.plan import Plan
from dsh.repl.lines import StdinLines
from dsh.repl.statements import CONTINUATION, PROMPT, Statements, whole_when


def compile_(text: str, first_line: int) -> Plan:
    return compile_source(Source("<stdin>", text, first_line))


def test_lines_make_whole_statements_numbered_from_their_first_line() -> None:
    reader = Statements(compile_)
    assert reader.prompt == PROMPT
    first = reader.feed("x = 1")
    assert first is not None and (first.lines, first.first_line, first.text) == (("x = 1",), 1, "x = 1\n")
    assert first.value is not None and len(first.value.statements) == 1
    assert reader.feed("if true {") is None
    assert reader.prompt == CONTINUATION
    assert reader.feed("echo in") is None
    whole = reader.feed("}")
    assert whole is not None and (whole.first_line, len(whole.lines)) == (2, 3)
    assert reader.prompt == PROMPT and reader.first_line == 5
    blank = reader.feed("  # a comment")
    assert blank is not None and blank.blank and reader.first_line == 6


def test_an_error_is_raised_once_its_lines_are_taken() -> None:
    reader = Statements(compile_)
    assert reader.feed("echo a |") is None
    with pytest.raises(LangError) as error:
        reader.feed("within 5")  # '5' is not a duration: the statement ends there
    assert not isinstance(error.value, IncompleteInput)
    assert error.value.span.location().startswith("<stdin>:2")
    assert reader.first_line == 3 and reader.lines == []
    whole = reader.feed("echo b")
    assert whole is not None and whole.first_line == 3


def test_ctrl_c_drops_the_statement_begun_and_the_end_gives_what_is_left() -> None:
    reader = Statements(whole_when(lambda text, first_line: not text.rstrip().endswith("|")))
    assert reader.feed("echo a |") is None
    reader.drop()
    assert reader.prompt == PROMPT and reader.first_line == 1
    assert reader.feed("echo b |") is None
    assert reader.feed("") is None
    rest = reader.rest()
    assert rest is not None and (rest.lines, rest.first_line, rest.value) == (("echo b |", ""), 1, None)
    assert reader.rest() is None  # taken
    assert reader.feed("   ") is not None and reader.rest() is None  # a blank end is nothing


def test_stdin_lines_are_read_on_the_loop_without_holding_it() -> None:
    async def read() -> tuple[list[str | None], int]:
        rfd, wfd = os.pipe()
        lines = StdinLines(rfd)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        got: list[str | None] = []
        first = asyncio.create_task(lines.read())
        await asyncio.sleep(0.2)  # nothing written yet: the loop goes on
        assert not first.done() and ticks >= 5
        os.write(wfd, b"one\r\ntwo\nthr")
        got.append(await first)
        got.append(await lines.read())
        os.write(wfd, "ee \xe9".encode())
        os.close(wfd)
        got.append(await lines.read())
        got.append(await lines.read())
        ticker.cancel()
        os.close(rfd)
        return got, ticks

    got, _ = asyncio.run(read())
    assert got == ["one", "two", "three \xe9", None]


def test_stdin_lines_from_a_file_or_dev_null_are_read_at_once(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_text("a\nb")

    async def read(name: str) -> list[str | None]:
        fd = os.open(name, os.O_RDONLY)
        try:
            lines = StdinLines(fd)  # a file cannot be waited for: epoll refuses it
            return [await lines.read() for _ in range(3)]
        finally:
            os.close(fd)

    assert asyncio.run(read(str(path))) == ["a", "b", None]
    assert asyncio.run(read(os.devnull)) == [None, None, None]
