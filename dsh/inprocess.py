"""Text run in this process, by a driver of its own: a whole script or `-c` text
(`run_text`), or lines piped in, run a statement at a time (`run_lines`). A
REPL at a terminal is a client of an executor process instead (dsh.client)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import BinaryIO

from dsh.driver import Driver, status_of
from dsh.errors import DshError, LangError
from dsh.exits import Exit
from dsh.guard import guarded
from dsh.repl.statements import Statements
from dsh.runtime.results import LineResult
from dsh.wholefile import read_capped


class OwnStdin:
    """dsh's own standard input for `| stdin -`, read whole on first use (at most
    the cap and a byte: more is refused) and then the same bytes for every line."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._data: bytes | None = None
        self._lock = threading.Lock()

    def __call__(self, cap: int) -> bytes:
        with self._lock:
            if self._data is None:
                self._data = read_capped(self._stream, cap)
            return self._data


def run_text(driver: Driver, text: str, name: str) -> int:
    """Compile a whole text, then run it; stop at the first line not ok."""

    async def main() -> list[LineResult]:
        try:
            await driver.load()
            plan = driver.compile(text, name)  # compile errors touch no state
            driver.ready_local(plan)  # its agent boots while the session is claimed
            await driver.claim()
            return await driver.run(plan)
        finally:
            await driver.release()

    return status_of(asyncio.run(guarded(main())))


def run_lines(
    driver: Driver,
    read: Callable[[str], str | None],
    name: str,
    *,
    interactive: bool,
    report_error: Callable[[DshError], object],
) -> int:
    """Read and run text a statement at a time, here (lines piped in; the REPL is
    a client of an executor process, dsh.client).

    `read(prompt)` returns the next line without its newline, or None at the
    end. Interactive: errors and failures are shown and reading goes on, and
    Ctrl-C cancels the running line. Otherwise the first error ends it.
    """
    with asyncio.Runner() as runner:
        try:
            runner.run(driver.claim())
            return _read_eval(driver, runner, read, name, interactive, report_error)
        finally:
            runner.run(driver.release())


def _read_eval(
    driver: Driver,
    runner: asyncio.Runner,
    read: Callable[[str], str | None],
    name: str,
    interactive: bool,
    report_error: Callable[[DshError], object],
) -> int:
    status: int = Exit.OK
    statements = Statements(lambda text, first_line: driver.compile(text, name, first_line))
    while True:
        try:
            runner.run(driver.idle())
        except DshError as exc:  # e.g. the lease ran out: the next line claims it again
            if not interactive:
                raise
            report_error(exc)
        try:
            # Piped lines are waited for on the loop: meanwhile the session's lease is
            # kept and its hosts get ready for the next line (their agents boot).
            line = read(statements.prompt) if interactive else _read_on(runner, read, statements.prompt)
        except KeyboardInterrupt:
            if not interactive:
                raise
            statements.drop()
            print()
            continue
        if line is None:
            break
        try:
            whole = statements.feed(line)
        except LangError as exc:
            report_error(exc)
            if not interactive:
                return exc.exit_code
            status = exc.exit_code
            continue
        if whole is None:
            continue
        plan = whole.value
        assert plan is not None
        if not plan.statements:
            runner.run(driver.ensure_owner())
            runner.run(driver.keep_functions())
            continue
        try:
            runner.run(driver.ensure_owner())
            results = runner.run(guarded(driver.run(plan, stop_on_failure=True)))
        except KeyboardInterrupt:
            if not interactive:
                raise
            driver.say("cancelled")
            status = Exit.INTERRUPTED
            continue
        except DshError as exc:
            if not interactive:
                raise
            report_error(exc)
            status = exc.exit_code
            continue
        status = status_of(results)
        if status and not interactive:
            return status
    rest = statements.rest()
    if rest is not None:
        try:
            driver.compile("\n".join(rest.lines), name, rest.first_line)
        except LangError as exc:
            report_error(exc)
            return exc.exit_code
    return status


def _read_on(runner: asyncio.Runner, read: Callable[[str], str | None], prompt: str) -> str | None:
    """`read(prompt)` in a thread of its own (a daemon: a read that never returns
    keeps no exit waiting), while `runner`'s loop runs."""
    loop = runner.get_loop()
    got: asyncio.Future[str | None] = loop.create_future()

    def settle(value: str | None, exc: BaseException | None) -> None:
        if got.done():
            return
        if exc is not None:
            got.set_exception(exc)
        else:
            got.set_result(value)

    def work() -> None:
        try:
            value, exc = read(prompt), None
        except BaseException as caught:  # handed to the loop, raised there
            value, exc = None, caught
        with contextlib.suppress(RuntimeError):  # the loop is closed: dsh is ending anyway
            loop.call_soon_threadsafe(settle, value, exc)

    async def wait() -> str | None:
        return await got

    threading.Thread(target=work, name="dsh-stdin", daemon=True).start()
    return runner.run(wait())
