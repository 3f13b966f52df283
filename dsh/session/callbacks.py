"""Callbacks in the store: where they are POSTed, their tokens, and accepting a POST.

A callback is `callback_key(TREE, TOKEN)` (a `Callback`: whose session and
action it is, and until when it is awaited), made by the executor that waits
for it, in the tree of its session (`cb/u/NAME/TOKEN`: on a shared etcd only
the tree's users and `dsh serve` can reach it); its POST, to
`BASE/cb/u/NAME/TOKEN`, becomes `event_key(TREE, TOKEN)` (a `CallbackEvent`),
put in one transaction only if the callback exists and has no event yet, so
any number of `dsh serve` instances can take POSTs for one store and each
callback is accepted once. The token is 32 characters of an HMAC (SHA-256) of
the session's id and the action under a secret of the session (`secret`, in
the tree): not guessable nor computable from outside it, and the same after a
takeover.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import time

from dsh.session.codec import dumps, loads
from dsh.session.keys import SERVERS, Tree, callback_key, event_key
from dsh.session.records import Callback, CallbackEvent, CorruptRecord, Registration
from dsh.store.base import Compare, Put, Store

#: How long one store call may take.
STORE_TIMEOUT = 10.0
#: What a token looks like (what `token` makes, and some room).
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


async def secret(store: Store, key: bytes, *, timeout: float) -> bytes:
    """The session's callback secret (at `key`), made by whoever asks first."""
    made = os.urandom(32).hex().encode()
    await store.txn([Compare(key, "version", "==", 0)], [Put(key, made)], timeout=timeout)
    held = await store.get(key, timeout=timeout)
    return held.value if held is not None else made


def make_token(secret: bytes, session_id: str, action: str, host: str | None) -> str:
    """The token of `action`'s callback on `host` (the same for every owner)."""
    mac = hmac.new(secret, f"{session_id}/{action}/{host or ''}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32]


async def callback_base(store: Store, env: dict[str, str] | None = None) -> str | None:
    """Where callbacks are POSTed: DSH_CALLBACK_URL, else a running `dsh serve`'s URL."""
    given = (env if env is not None else os.environ).get("DSH_CALLBACK_URL")
    if given:
        return given.rstrip("/")
    kvs, _ = await store.range(SERVERS, timeout=STORE_TIMEOUT)
    for kv in kvs:
        with contextlib.suppress(CorruptRecord):  # one that cannot be read: the next one
            return loads(Registration, kv.value, key=kv.key).url.rstrip("/")
    return None


async def check(store: Store, tree: Tree, token: str) -> tuple[int, str] | None:
    """Why a POST to this callback would be refused now (HTTP status, what to say), or None."""
    if not TOKEN.fullmatch(token):
        return 404, "no such callback"
    held = await store.get(callback_key(tree, token), timeout=STORE_TIMEOUT)
    if held is None:
        return 404, "no such callback"
    try:
        deadline = loads(Callback, held.value, key=held.key).deadline
    except CorruptRecord:  # damaged, or not written by dsh
        return 404, "no such callback"
    if deadline is not None and time.time() > deadline:
        return 410, "the wait for this callback is over"
    if await store.get(event_key(tree, token), timeout=STORE_TIMEOUT) is not None:
        return 409, "this callback was used already: each is accepted once"
    return None


async def accept(store: Store, tree: Tree, token: str, body: bytes, peer: str) -> tuple[int, str]:
    """Accept one POST to a callback: (HTTP status, what to say)."""
    refused = await check(store, tree, token)
    if refused is not None:
        return refused
    record = CallbackEvent(body.decode("utf-8", "replace"), time.time(), peer)
    event = event_key(tree, token)
    result = await store.txn(  # the callback is there, and no event yet
        [Compare(callback_key(tree, token), "version", ">", 0), Compare(event, "version", "==", 0)],
        [Put(event, dumps(record))],
        timeout=STORE_TIMEOUT,
    )
    if result.succeeded:
        return 202, "accepted"
    if await store.get(event, timeout=STORE_TIMEOUT) is not None:
        return 409, "this callback was used already: each is accepted once"
    return 404, "no such callback"  # removed meanwhile (dsh rm)
