"""What an earlier owner left of a step, read by the new owner: a result record as
the step's end, its output's tail, and whether the host is still the one it was
started on."""

from __future__ import annotations

from collections.abc import Mapping

from dsh.bytestext import loaded, to_bytes
from dsh.plan import Outcome
from dsh.remote.base import Exec, Identity, Remote, RemoteUnreachable, Spot


async def moved_host(remote: Remote, spot: Spot, held: Mapping[str, object]) -> Exec | None:
    """The end of an action taken up whose host is not the one an earlier owner
    started it on (or cannot be asked who it is); None when it is the same."""
    where = held.get("where")
    if not isinstance(where, dict):
        return None
    try:
        here = await remote.identity()
    except RemoteUnreachable as exc:
        return Exec(Outcome.LOST, None, 0.0, f"launched before; its host cannot be reached: {exc.message}")
    moved = _elsewhere(spot.alias, where, here)
    return Exec(Outcome.LOST, None, 0.0, moved) if moved else None


def recorded(held: Mapping[str, object]) -> Exec:
    """The end of a step as its result record has it."""
    exit_status = held.get("exit")
    return Exec(
        str(held.get("outcome", Outcome.LOST)),
        exit_status if isinstance(exit_status, int) else None,
        float(held.get("seconds", 0.0)),  # type: ignore[arg-type]
        str(held.get("message", "")),
    )


def untail(value: object) -> bytes:
    """The output tail a result record keeps, as the bytes it was (records older
    than dsh.bytestext kept bytes that were not UTF-8 as `\\xNN` text)."""
    return to_bytes(loaded(value)) if isinstance(value, str | dict) else b""


def _elsewhere(alias: str, was: dict[str, object], here: Identity | None) -> str:
    """Why `alias` is not the host an earlier owner launched on ("" when it is)."""
    if here is None:
        return ""
    login, key = str(was.get("login", "")), str(was.get("key", ""))
    if login and login != here.login:
        return (
            f"{alias} is {login} in this session; here it is {here.login}: "
            "its spool is not asked and nothing is started there"
        )
    if key and here.key and key != here.key:
        return (
            f"{alias}'s host key was {key} in this session; here it is {here.key}: "
            "its spool is not asked and nothing is started there"
        )
    return ""
