"""`dsh serve`: the server that takes the POSTs of `await callback` (dsh.serve),
run until SIGTERM or SIGINT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsh.cli.wiring import Wiring
from dsh.errors import UsageError
from dsh.exits import Exit
from dsh.lang.durations import parse_duration
from dsh.names import digits

if TYPE_CHECKING:
    import ssl


def serve(wiring: Wiring, rest: list[str]) -> int:
    """`dsh serve [--listen ADDR:PORT] [--public-url URL] [--cert F --key F]
    [--header-timeout D] [--body-timeout D] [--max-connections N]`: take the POSTs
    of callbacks and write them into the store, until stopped."""
    import asyncio
    import signal

    from dsh import serve as callbacks

    found = options(list(rest))
    host, port = parse_listen(found["listen"])
    tls = tls_context(found["cert"], found["key"])
    store = wiring.store()
    server = callbacks.Server(
        store, host=host, port=port, public_url=found["public_url"], tls=tls, limits=found["limits"]
    )

    async def run() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(server.run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return Exit.OK
        except OSError as exc:
            raise UsageError(f"dsh serve cannot listen on {host}:{port}: {exc.strerror}") from None
        finally:
            await store.close()
        return Exit.OK

    return asyncio.run(run())


def parse_listen(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not digits(port) or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen {text!r}: give ADDRESS:PORT, like 127.0.0.1:8470")
    return host.strip("[]") or "0.0.0.0", int(port)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    import ssl

    if not cert and not key:
        return None
    if not (cert and key):
        raise UsageError("dsh serve needs both --cert and --key for HTTPS")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"dsh serve: cannot load {cert} and {key}: {exc}") from None
    return context


_OPTIONS = {
    "--listen": "listen",
    "--public-url": "public_url",
    "--cert": "cert",
    "--key": "key",
    "--header-timeout": "header_timeout",
    "--body-timeout": "body_timeout",
    "--max-connections": "max_connections",
}
#: The bounds of the limits' options.
TIMEOUT_RANGE = (0.001, 3600.0)
CONNECTIONS_RANGE = (1, 65536)


def options(rest: list[str]) -> dict[str, Any]:
    """`serve [--listen ADDR:PORT] [--public-url URL] [--cert F --key F] [--header-timeout D]
    [--body-timeout D] [--max-connections N]`; the last three make up `limits`."""
    found: dict[str, Any] = {"listen": "127.0.0.1:8470", "public_url": None, "cert": None, "key": None}
    given: dict[str, str] = {}
    while rest:
        arg = rest.pop(0)
        flag, eq, value = arg.partition("=")
        if flag not in _OPTIONS:
            raise UsageError(f"serve: unknown option {arg!r} ({', '.join(_OPTIONS)})")
        if not eq:
            if not rest:
                raise UsageError(f"serve: {flag} needs a value")
            value = rest.pop(0)
        given[flag] = value
        if flag in ("--listen", "--public-url", "--cert", "--key"):
            found[_OPTIONS[flag]] = value
    if found["public_url"] is not None and not str(found["public_url"]).startswith(("http://", "https://")):
        raise UsageError(f"--public-url {found['public_url']!r}: give an http:// or https:// URL")
    from dsh.serve import Limits

    default = Limits()
    found["limits"] = Limits(
        header_timeout=_timeout("--header-timeout", given.get("--header-timeout"), default.header_timeout),
        body_timeout=_timeout("--body-timeout", given.get("--body-timeout"), default.body_timeout),
        connections=_count("--max-connections", given.get("--max-connections"), default.connections),
    )
    return found


def _timeout(flag: str, text: str | None, default: float) -> float:
    if text is None:
        return default
    low, high = TIMEOUT_RANGE
    seconds = parse_duration(text)
    if seconds is None or not low <= seconds <= high:
        raise UsageError(f"{flag} {text!r}: give a duration from 1ms to 1h, like 10s or 500ms")
    return seconds


def _count(flag: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    low, high = CONNECTIONS_RANGE
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise UsageError(f"{flag} {text!r}: give a whole number from {low} to {high}")
    return int(text)
