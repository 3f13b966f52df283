"""An action's input (`| stdin FILE`) put into its host's spool as ACTION@ALIAS.in,
before its LAUNCH, which gives it to the command as its standard input.

It is written under a temporary name, made exclusively (a name planted there is
not followed), and renamed into place whole: LAUNCH finds the whole input or
none (and then starts nothing). A later owner writes it again the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from dsh.remote.base import Spot
from dsh.remote.copying import CopyFailed, Files, mkdirs
from dsh.remote.spool import input_name

#: How long removing what an input left may take, when its writing was cut short.
REMOVE_BOUND = 5.0


async def place(files: Files, root: str, spot: Spot, data: bytes) -> None:
    """Write `data` as the action's input in the spool under `root` (relative: under
    the login user's home); CopyFailed with a sentence when it cannot."""
    spool = f"{root}/{spot.session}"
    final = f"{spool}/{input_name(spot.action, spot.alias)}"
    temp = f"{final}.{os.urandom(6).hex()}"
    try:
        try:
            made = await files.create(temp, data)
        except CopyFailed:
            await mkdirs(files, spool, 0o700)
            made = await files.create(temp, data)
        if not made:
            raise CopyFailed(f"{temp}: exists already")
        await files.rename(temp, final)
    except BaseException:  # cut short too (a timeout, a cancel): no partial input is left
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(files.remove(temp), REMOVE_BOUND)
        raise
