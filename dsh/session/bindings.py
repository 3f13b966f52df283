"""What a session has bound: its values as stored (`bind/NAME`), its result sets
and the source of its functions, encoded and read back in one place.

A bound value is stored whole (the executor refused one over the cap before it
came here): text as bytes, hosts as names, results with every host's outcome
and output.
"""

from __future__ import annotations

from dsh.bytestext import to_bytes
from dsh.runtime.results import HostResult
from dsh.runtime.values import HostsValue, ResultValue, SecretValue, StrValue, Value
from dsh.session.codec import dumps, load_binding, loads
from dsh.session.keys import Keys
from dsh.session.records import BoundHost, BoundHosts, BoundResults, BoundSecret, BoundText, ResultSets
from dsh.store.base import Store


def encode_value(value: Value) -> bytes:
    if isinstance(value, StrValue):
        return dumps(BoundText(to_bytes(value.text)))
    if isinstance(value, HostsValue):
        return dumps(BoundHosts(value.hosts))
    if isinstance(value, SecretValue):  # never its value: a new owner asks again
        return dumps(BoundSecret(value.prompt))
    # whole: the executor refused a value over the cap before it came here
    return dumps(BoundResults(tuple(_bound_host(r) for r in value.results)))


def _bound_host(r: HostResult) -> BoundHost:
    """A host result as bound: whole."""
    return BoundHost(
        r.host, r.outcome, r.exit_status, r.seconds, r.attempts, r.message, r.out, r.err, r.truncated
    )


def decode_value(raw: bytes, *, key: bytes) -> Value:
    """A bound value as stored at `key`; CorruptRecord if it is not one."""
    bound = load_binding(raw, key=key)
    if isinstance(bound, BoundText):
        return StrValue(bound.text.decode("utf-8", "surrogateescape"))
    if isinstance(bound, BoundHosts):
        return HostsValue(bound.hosts)
    if isinstance(bound, BoundSecret):
        return SecretValue(None, bound.prompt)
    return ResultValue(
        tuple(
            HostResult(
                h.host,
                h.outcome,
                h.exit,
                h.seconds,
                attempts=h.attempts,
                message=h.message,
                out=h.out,
                err=h.err,
                truncated=h.truncated,
            )
            for h in bound.hosts
        )
    )


async def load(
    store: Store, keys: Keys, *, timeout: float
) -> tuple[dict[str, Value], dict[str, tuple[str, ...]]]:
    """The bindings and result sets left by earlier runs of this session."""
    kvs, _ = await store.range(keys.bindings, timeout=timeout)
    bindings = {kv.key[len(keys.bindings) :].decode(): decode_value(kv.value, key=kv.key) for kv in kvs}
    held = await store.get(keys.sets, timeout=timeout)
    sets = loads(ResultSets, held.value, key=held.key).sets if held else {}
    return bindings, dict(sets)


async def function_sources(store: Store, keys: Keys, *, timeout: float) -> dict[str, str]:
    """The source text of each function the session defined, by name."""
    kvs, _ = await store.range(keys.functions, timeout=timeout)
    return {kv.key[len(keys.functions) :].decode(): kv.value.decode("utf-8", "replace") for kv in kvs}
