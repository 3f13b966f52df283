"""Awaiting events: what each `await` kind looks at, and how often, until its deadline.

An await looks, waits `every`, and looks again until what it waits for holds
or its deadline (an absolute wall-clock time, stored when the wait began, so
a resumed await keeps it) has passed. Probes are bounded by what is left of
the wait. What an await looks at:

- `port [HOST:]PORT`: HOST:PORT from the session's machine; a bare PORT on the
  flow's host (over SSH: a channel to the host's own localhost).
- `http URL [status N]`: from the session's machine; N, else any 2xx.
- `file PATH`, `cmd 'WORDS'`: on the flow's host, outside the spool (a probe is
  read-only and may run many times).
- `key KEY [= VALUE]` and `signal NAME`: the store, through `Events` (dsh.runtime.ports).
- `callback [URL]`: the event `dsh serve` wrote into the store when the
  callback's URL got its POST (the body is the value).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable

from dsh.names import digits
from dsh.plan import LOOK_SLACK
from dsh.record import record
from dsh.remote.base import Remote
from dsh.remote.local import tcp_open
from dsh.runtime.clock import Clock
from dsh.runtime.ports import CallbackError as CallbackError
from dsh.runtime.ports import Events

#: One probe never takes longer than this, whatever is left of the wait.
PROBE_MAX = 10.0
#: Bytes of an HTTP body kept (`await http … as NAME`).
BODY_BYTES = 64 * 1024


NO_SERVER = (
    "no `dsh serve` runs against this session's store to take the callback's POST: "
    "start one (dsh serve --listen ADDR:PORT) or set DSH_CALLBACK_URL"
)


@record
class Arrived:
    """How an await ended: `ok` (with the value it brings) or not (with why)."""

    ok: bool
    value: str = ""
    message: str = ""


Look = Callable[[float], Awaitable[tuple[bool, str, str]]]


async def wait_for_event(clock: Clock, deadline: float, every: float, look: Look, what: str) -> Arrived:
    """Look until `look(bound)` says (True, value, _) or the deadline passes."""
    last = ""
    while True:
        left = deadline - clock.wall()
        bound = max(0.1, min(PROBE_MAX, every, left))
        try:  # a probe in flight ends within the slack `dsh explain` counts
            held, value, note = await asyncio.wait_for(look(bound), bound + LOOK_SLACK)
        except TimeoutError:
            held, value, note = False, "", f"the probe did not answer within {bound + LOOK_SLACK:g}s"
        if held:
            return Arrived(True, value)
        last = note or last
        left = deadline - clock.wall()
        if left <= 0:
            return Arrived(False, "", f"{what}{f' (last: {last})' if last else ''}")
        await clock.sleep(min(every, left))


def looker(
    kind: str,
    args: list[str],
    remote: Remote,
    events: Events,
    action: str,
    host: str | None,
    deadline: float | None = None,
) -> tuple[Look, str]:
    """How one await looks, and what its timeout says it was waiting for."""
    if kind == "port":
        where, _, port_text = args[0].rpartition(":")
        port = int(port_text) if digits(port_text) else 0

        async def port_look(bound: float) -> tuple[bool, str, str]:
            if not 0 < port < 65536:
                return False, "", f"{args[0]!r} is not a port"
            if where:
                return await tcp_open(where.strip("[]"), port, bound), "", ""
            return await remote.port_open(port, timeout=bound), "", ""

        return port_look, f"port {args[0]} not open"
    if kind == "http":
        url, wanted = args[0], int(args[1]) if len(args) > 1 else None

        async def http_look(bound: float) -> tuple[bool, str, str]:
            status, body, note = await asyncio.to_thread(_get, url, bound)
            held = status == wanted if wanted is not None else status is not None and 200 <= status < 300
            return held, body, note or (f"status {status}" if status is not None else "")

        return http_look, f"{url} did not answer {wanted if wanted else '2xx'}"
    if kind in ("file", "cmd"):
        command = f"test -e {shlex.quote(args[0])}" if kind == "file" else args[0]

        async def check_look(bound: float) -> tuple[bool, str, str]:
            checked = await remote.check(command, timeout=bound)
            note = checked.message or (f"exit {checked.status}" if checked.status else "")
            out = checked.out.decode("utf-8", "replace").rstrip("\n")  # as sh's $(…) gives it
            return checked.status == 0, out, note

        what = f"{args[0]} did not appear" if kind == "file" else f"`{args[0]}` did not exit 0"
        return check_look, what
    if kind == "key":
        key, wanted_value = args[0], args[1] if len(args) > 1 else None

        async def key_look(bound: float) -> tuple[bool, str, str]:
            value = await events.key(key)
            held = value is not None and (wanted_value is None or value == wanted_value)
            return held, value or "", ""

        what = f"key {key} not set" + (f" to {wanted_value!r}" if wanted_value is not None else "")
        return key_look, what

    if kind == "approval":
        principals, quorum = args[0], int(args[1])
        ends = deadline if deadline is not None else 0.0

        async def approval_look(bound: float) -> tuple[bool, str, str]:
            state = await events.approval(action, principals, quorum, ends)
            note = f"{len(state.approvers)} of {state.needed} approvals"
            return len(state.approvers) >= state.needed, ",".join(state.approvers), note

        return approval_look, f"not approved by {quorum} of {principals or 'the team'}"

    if kind == "callback":
        url, first = args[0], [True]

        async def callback_look(bound: float) -> tuple[bool, str, str]:
            body = await events.callback(url, deadline if first[0] else None)
            first[0] = False
            return body is not None, body or "", ""

        return callback_look, f"no POST to {url}"

    async def signal_look(bound: float) -> tuple[bool, str, str]:
        value = await events.take_signal(args[0], action, host)
        return value is not None, value or "", ""

    return signal_look, f"no signal {args[0]!r}"


def _get(url: str, timeout: float) -> tuple[int | None, str, str]:
    """GET url: (status, body, note); status None when nothing answered."""
    import urllib.error  # here: urllib.request costs ~20 ms of start-up
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "dsh"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read(BODY_BYTES).decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), "", ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, "", str(reason)


def timed_out(what: str, timeout: float) -> str:
    return f"{what} within {timeout:g}s"
