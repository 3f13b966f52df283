"""Fakes for tests of the runtime, where a real part adds nothing: a clock whose
waits cost no time, a remote that answers as told and says what it was asked,
a recorder that lists its calls, and the store's events as a dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsh import plan as p
from dsh.remote.base import Check, Exec, Identity, OutputSink, RemoteUnreachable, Spot
from dsh.runtime.ports import ActionResult, Approval, AwaitEnded, NullRecorder
from dsh.runtime.values import Value


class FakeClock:
    """Time that moves only when slept (monotonic from 0; the wall clock from 1.7e9)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000 + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeRemote:
    """A host that runs nothing: `run` and `follow` stream `output` and end as `ends`;
    `probe` answers `answer` (or raises it); `identity` gives `who` (or raises it).
    Every call is listed in `calls` as (method, action or command, timeout)."""

    def __init__(
        self,
        name: str = "h1",
        *,
        answer: str | RemoteUnreachable = "none",
        who: Identity | RemoteUnreachable | None = None,
        ends: Exec | None = None,
        output: bytes = b"",
    ) -> None:
        self._name = name
        self.answer = answer
        self.who = who
        self.ends = ends or Exec(p.Outcome.OK, 0, 0.5)
        self.output = output
        self.calls: list[tuple[str, str, float | None]] = []

    @property
    def name(self) -> str:
        return self._name

    async def identity(self) -> Identity | None:
        self.calls.append(("identity", "", None))
        if isinstance(self.who, RemoteUnreachable):
            raise self.who
        return self.who

    async def run(
        self,
        command: str,
        *,
        spot: Spot,
        timeout: float,
        output: OutputSink,
        env: object = None,
        stdin: object = None,
        told: object = None,
    ) -> Exec:
        self.calls.append(("run", spot.action, timeout))
        if self.output:
            output("stdout", self.output)
        return self.ends

    async def follow(self, spot: Spot, *, timeout: float, output: OutputSink, told: object = None) -> Exec:
        self.calls.append(("follow", spot.action, timeout))
        if self.output:
            output("stdout", self.output)
        return self.ends

    async def probe(self, spot: Spot) -> str:
        self.calls.append(("probe", spot.action, None))
        if isinstance(self.answer, RemoteUnreachable):
            raise self.answer
        return self.answer

    async def kill(self, spot: Spot) -> bool:
        self.calls.append(("kill", spot.action, None))
        return True

    async def check(self, command: str, *, timeout: float) -> Check:
        self.calls.append(("check", command, timeout))
        return Check(0, b"")

    async def port_open(self, port: int, *, timeout: float) -> bool:
        return True

    async def clean(self, keep: float) -> None:
        pass

    async def remove(self, session: str) -> bool:
        return True


class ListRecorder(NullRecorder):
    """A recorder that keeps nothing but a list of its calls: (method, details)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []

    async def intent(
        self,
        action: str,
        host: str | None,
        command: str,
        timeout: float,
        where: Identity | None = None,
        **facts: object,
    ) -> None:
        self.calls.append(("intent", (action, host, timeout)))

    async def result(self, result: ActionResult) -> None:
        self.calls.append(("result", result))

    async def sleep(self, action: str, host: str | None, seconds: float, deadline: float) -> None:
        self.calls.append(("sleep", (action, host, seconds, deadline)))

    async def bound(self, run: int, name: str, value: Value) -> None:
        self.calls.append(("bound", (run, name)))

    async def taking_up(self, action: str, host: str | None, timeout: float) -> None:
        self.calls.append(("taking_up", (action, host, timeout)))

    async def awaiting(self, action: str, host: str | None, what: str, deadline: float) -> None:
        self.calls.append(("awaiting", (action, host, deadline)))

    async def callback(self, action: str, host: str | None, url: str) -> None:
        self.calls.append(("callback", (action, host, url)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def results(self) -> list[ActionResult]:
        return [r for kind, r in self.calls if kind == "result"]


class DictEvents:
    """The store's events as a dict of keys and a list of signals per name."""

    def __init__(self, keys: dict[str, str] | None = None, signals: Sequence[tuple[str, str]] = ()) -> None:
        self.keys = dict(keys or {})
        self.signals = list(signals)
        self.looks = 0

    async def key(self, key: str) -> str | None:
        self.looks += 1
        return self.keys.get(key)

    async def approval(self, action: str, principals: str, quorum: int, deadline: float) -> Approval:
        raise AwaitEnded("no approvals here")

    async def approval_over(self, action: str) -> None:
        pass

    async def take_signal(self, name: str, action: str, host: str | None) -> str | None:
        self.looks += 1
        for i, (sent, value) in enumerate(self.signals):
            if sent == name:
                del self.signals[i]
                return value
        return None

    async def new_callback(self, action: str, host: str | None) -> tuple[str, bool]:
        return f"http://cb.invalid/{action}", True

    async def callback(self, url: str, deadline: float | None) -> str | None:
        return None
