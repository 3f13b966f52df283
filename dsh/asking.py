"""Where a run in the foreground asks its questions (a password for hosts' sudo):
the terminal, or a program (`--askpass PROG`, `DSH_ASKPASS`: what cron and CI
give). A detached session's questions go to its attached clients instead
(dsh/daemon.py).

An answer is only ever held in memory: typed at the terminal with echo off,
or read from the program's stdout; never logged, never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import termios
from collections.abc import Callable

from dsh.prompt import Prompt

#: The most bytes of an answer read (a password, not a file).
MAX_ANSWER = 4096


class TerminalPrompter:
    """Asks at the controlling terminal (/dev/tty), echo off, within the prompt's
    bound; Ctrl-D or an empty line refuses. Answers typed are never echoed."""

    def __init__(self, tty: str = "/dev/tty") -> None:
        self.tty = tty

    @staticmethod
    def available(tty: str = "/dev/tty") -> bool:
        try:
            fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return False
        os.close(fd)
        return True

    async def ask(self, prompt: Prompt) -> str | None:
        try:
            fd = os.open(self.tty, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return None
        loop = asyncio.get_running_loop()
        saved = None
        try:
            with contextlib.suppress(termios.error):
                saved = termios.tcgetattr(fd)
                quiet = termios.tcgetattr(fd)
                quiet[3] &= ~termios.ECHO if prompt.secret else ~0
                termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
            os.write(fd, ("\r" + prompt.text).encode("utf-8", "replace"))
            got = bytearray()
            ended: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    chunk = b""
                if not chunk:
                    if not ended.done():
                        ended.set_result(None)
                    return
                got.extend(chunk)
                done = b"\n" in got or b"\r" in got or b"\x04" in got or len(got) > MAX_ANSWER
                if done and not ended.done():
                    ended.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await asyncio.wait_for(ended, max(prompt.bound, 0.001))
            except TimeoutError:
                os.write(fd, b"\r\n(no answer in time)\r\n")
                return None
            finally:
                loop.remove_reader(fd)
            if prompt.secret:
                os.write(fd, b"\r\n")
            line = bytes(got).split(b"\n")[0].split(b"\r")[0]
            if b"\x04" in line or not line or len(got) > MAX_ANSWER:
                return None
            return line.decode("utf-8", "surrogateescape")
        finally:
            if saved is not None:
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
            os.close(fd)


class ProgramPrompter:
    """Asks a program (`--askpass PROG`, `DSH_ASKPASS`): run with the prompt's text
    as its one argument, as ssh and sudo run theirs; the first line it prints is
    the answer; an exit other than 0 refuses. Bounded by the prompt's bound."""

    def __init__(self, program: str, say: Callable[[str], None]) -> None:
        self.program = program
        self.say = say

    async def ask(self, prompt: Prompt) -> str | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.program,
                prompt.text,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            self.say(f"cannot run the askpass program {self.program}: {exc.strerror or exc}")
            return None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), max(prompt.bound, 0.001))
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        if proc.returncode != 0:
            return None
        line = out[:MAX_ANSWER].split(b"\n")[0].removesuffix(b"\r")
        return line.decode("utf-8", "surrogateescape") if line else None
