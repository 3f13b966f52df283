"""A put: a file or a tree from this machine to a host (dsh/remote/copying.py says how
a copy is claimed, written and ended). Each file is compared first (size, then the
host's SHA-256), sent beside its destination from where a taken-up copy stopped,
checked, and renamed into place; `--sudo` stages the file in the spool and installs
it with one command through the wrapper (sudo's password asked as any command's)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import shlex
from collections.abc import Sequence

from dsh.remote.base import CopyFacts, Exec, Spot
from dsh.remote.copying import (
    CHUNK,
    MIN_STEP,
    PARALLEL,
    RESUME_BACK,
    Copier,
    CopyFailed,
    Stat,
    join,
    temp_name,
)
from dsh.remote.manifest import DIR, FILE, LINK, Entry, Manifest

#: Files at least this big are sent once per machine (copying.Blobs); smaller ones
#: are sent SMALL_AT_ONCE at a time and checked together.
SHARE_MIN = 1 << 20
SMALL_AT_ONCE = 8

#: Copies a blob ($1) into a file made for it ($2).
CP = r"""printf '%s start\n' "$tag"
cp -- "$1" "$2"
"""

#: Sets the owner (if given: $3) and mode ($4) of a temporary file ($1) and renames
#: it into place ($2); on failure it removes the temporary file.
PLACE = r"""printf '%s start\n' "$tag"
t=$1 r=$2 o=$3 m=$4
{ [ -z "$o" ] || chown -- "$o" "$t"; } && chmod -- "$m" "$t" && mv -f -- "$t" "$r" && exit 0
rm -f -- "$t"; exit 1
"""

#: What `put --sudo` runs as USER, with the staged file on its stdin: the missing
#: directories of the destination made, the temporary file beside it made exclusively
#: (`set -C`: whatever has its name is removed first, and a link planted there after
#: is not followed), owner (`chown -h`) and mode set, renamed onto the destination
#: but never into a directory of that name (`mv -T`).
_INSTALL_SH = (
    'umask 077; t=$1 r=$2 o=$3 m=$4; case $r in */*) mkdir -p -- "${r%/*}" || exit 1 ;; esac; '
    '[ -d "$r" ] && [ ! -L "$r" ] && { echo "$r: is a directory" >&2; exit 1; }; '
    'rm -f -- "$t" && (set -C; cat >"$t") || exit 1; '
    '{ [ -z "$o" ] || chown -h -- "$o" "$t"; } && chmod -- "$m" "$t" && mv -f -T -- "$t" "$r" && exit 0; '
    'rm -f -- "$t"; exit 1'
)
#: The command (run as the login user, through the wrapper) that runs it through sudo.
INSTALL = "sudo -A -u {user} -- sh -c {script} dsh-install {tmp} {dest} {owner} {mode} <{stage}"


class Put(Copier):
    """A copy from this machine to the host."""

    async def copy(self) -> CopyFacts:
        job, facts = self.job, self.job.facts
        src = job.source
        assert src is not None, "a put carries its source"
        self.total = src.size
        dest = facts.remote
        if job.sudo is not None:
            unchanged = await self._put_sudo(src, dest)
            return CopyFacts(facts.direction, facts.local, dest, src.sha256, unchanged, src.size)
        parent = posixpath.dirname(dest)
        if parent:
            await self.mkdirs(parent, 0o755)
        targets = {e.path: join(dest, e.path) for e in src.entries}
        files = [e for e in src.entries if e.kind == FILE]
        stats = await self._stats([targets[e.path] for e in files])
        same = [targets[e.path] for e in files if _same_size(stats.get(targets[e.path]), e)]
        sums = await self.sums(same) if same else {}
        changed = False
        small: list[tuple[Entry, str, int]] = []  # sent together, checked with one exec
        for e in src.entries:
            target = targets[e.path]
            if e.kind == DIR:
                changed |= await self._put_dir(e, target)
            elif e.kind == LINK:
                changed |= await self._put_link(e, target)
            else:
                mode = job.mode if job.mode is not None else e.mode
                there = stats.get(target)
                if there is not None and there.kind == DIR:
                    raise CopyFailed(f"{target}: is a directory, where the source has a file")
                if sums is not None and sums.get(target) == e.sha256:
                    st = stats.get(target)
                    if st is not None and st.mode != mode:
                        await self.files.chmod(target, mode)
                        changed = True
                    self.moved(e.size)
                    continue
                if e.size < SHARE_MIN:
                    small.append((e, target, mode))
                else:
                    await self._send(e, target, mode)
                changed = True
        await self._send_small(small)
        return CopyFacts(facts.direction, facts.local, dest, src.sha256, not changed, src.size)

    async def _stats(self, paths: Sequence[str]) -> dict[str, Stat | None]:
        gate = asyncio.Semaphore(PARALLEL)

        async def one(path: str) -> tuple[str, Stat | None]:
            async with gate:
                return path, await self.files.lstat(path)

        return dict(await asyncio.gather(*(one(path) for path in paths)))

    async def _put_dir(self, e: Entry, target: str) -> bool:
        st = await self.files.lstat(target)
        if st is None:
            await self.files.mkdir(target, e.mode)
            await self.files.chmod(target, e.mode)  # whatever the host's umask took away
            return True
        if st.kind != DIR:
            raise CopyFailed(f"{target}: exists and is not a directory")
        if st.mode != e.mode:
            await self.files.chmod(target, e.mode)
            return True
        return False

    async def _put_link(self, e: Entry, target: str) -> bool:
        st = await self.files.lstat(target)
        if st is not None and st.kind == LINK and await self.files.readlink(target) == e.target:
            return False
        if st is not None and st.kind == DIR:
            raise CopyFailed(f"{target}: is a directory, where the source has a link")
        tmp = temp_name(target, self.spot)
        with contextlib.suppress(CopyFailed):
            await self.files.remove(tmp)
        await self.files.symlink(e.target, tmp)
        await self.files.rename(tmp, target)
        return True

    async def _send(self, e: Entry, target: str, mode: int) -> None:
        """One file: written beside `target` (from where an earlier owner stopped, when
        taken up), checked, then renamed into place."""
        tmp = temp_name(target, self.spot)
        self.temps.add(tmp)
        lead, made = False, None
        if self.blobs is not None and self.machine and e.size >= SHARE_MIN and not self.job.resume:
            lead, made = self.blobs.claim(self.machine, e.sha256)
        if made is not None and not lead:  # another alias of this machine sends it
            async with asyncio.timeout(max(self.left() - MIN_STEP, 0.001)):  # wait_for may lose a cancel
                blob = await asyncio.shield(made)
            if blob is None or not await self._from_blob(blob, tmp, e):
                await self._upload(e, target, tmp)
        elif lead:
            assert made is not None
            try:
                await self._upload(e, target, tmp)
                made.set_result(await self._blob(tmp, e.sha256))
            finally:
                if not made.done():
                    made.set_result(None)
        else:
            await self._upload(e, target, tmp)
        await self._place(tmp, target, mode)

    async def _send_small(self, files: Sequence[tuple[Entry, str, int]]) -> None:
        """Small files (a tree's, mostly): sent a few at once, then checked with one
        exec for all of them (an exec costs more than sending a small file); one that
        does not check out is sent again on its own."""
        gate = asyncio.Semaphore(SMALL_AT_ONCE)
        temps = [temp_name(target, self.spot) for _, target, _ in files]
        self.temps.update(temps)

        async def send(e: Entry, tmp: str) -> None:
            async with gate:
                await self.files.send(self._local(e), tmp, 0, self.moved, self.alive)

        await asyncio.gather(*(send(e, tmp) for (e, _, _), tmp in zip(files, temps, strict=True)))
        sums = await self.sums(temps)
        for (e, target, mode), tmp in zip(files, temps, strict=True):
            if sums is not None and tmp in sums:
                held = sums[tmp] == e.sha256
            else:  # no tool said: read back
                held = await self._holds(tmp, e.sha256, e.size)
            if not held:
                self.done -= e.size
                await self._upload(e, target, tmp)
            await self._place(tmp, target, mode)

    async def _place(self, tmp: str, target: str, mode: int) -> None:
        """A checked temporary file into place: its owner (--owner), its mode, renamed."""
        if self.job.owner:  # chown, then chmod and rename, on the host
            code, _ = await self.files.shell(PLACE, [tmp, target, self.job.owner, f"{mode:o}"], self.left())
            if code != 0:
                raise CopyFailed(f"{target}: cannot give it to {self.job.owner} (put --sudo can)")
        else:
            await self.files.chmod(tmp, mode)
            await self.files.rename(tmp, target)
        self.temps.discard(tmp)

    def _local(self, e: Entry) -> str:
        return join(self.job.facts.local, e.path) if e.path else self.job.facts.local

    async def _upload(self, e: Entry, target: str, tmp: str) -> None:
        """Send one file to `tmp` (from where an earlier owner stopped, when taken up)
        until its SHA-256 checks out."""
        local = self._local(e)
        offset = await self._resume_at(tmp, e.size)
        start = self.done
        for attempt in (1, 2):
            self.done = start
            self.moved(offset)
            await self.files.send(local, tmp, offset, self.moved, self.alive)
            if await self._holds(tmp, e.sha256, e.size):
                return
            if attempt == 2 or offset == 0:
                raise CopyFailed(f"{target}: what the host received is not what was sent (SHA-256 differs)")
            offset = 0  # a resumed file that does not check out: again, whole

    async def _blob(self, tmp: str, sha256: str) -> str | None:
        """The file just sent, copied into the session's spool for the machine's other
        aliases (a copy of its own, not a link: the destination keeps one name); None
        when it cannot be (each alias is then sent it)."""
        blob = f"{self.spool}/blobs/{sha256}"
        try:
            st = await self.files.lstat(blob)
            if st is not None:
                return blob if st.kind == FILE else None
            await self.mkdirs(f"{self.spool}/blobs", 0o700)
            part = blob + ".part"
            with contextlib.suppress(CopyFailed):
                await self.files.remove(part)
            if not await self.files.create(part, b""):
                return None
            code, _ = await self.files.shell(CP, [tmp, part], self.left())
            if code != 0:
                return None
            await self.files.rename(part, blob)
        except CopyFailed:
            return None
        return blob

    async def _from_blob(self, blob: str, tmp: str, e: Entry) -> bool:
        """Copy the machine's blob to `tmp` on the host; whether it holds the file now."""
        st = await self.files.lstat(blob)
        if st is None or st.kind != FILE or st.size != e.size:
            return False
        with contextlib.suppress(CopyFailed):
            await self.files.remove(tmp)
        if not await self.files.create(tmp, b""):  # ours, made exclusively: cp writes into it
            return False
        code, _ = await self.files.shell(CP, [blob, tmp], self.left())
        if code != 0 or not await self._holds(tmp, e.sha256, e.size):
            return False
        self.moved(e.size)
        return True

    async def _resume_at(self, tmp: str, size: int) -> int:
        """Where a taken-up file goes on: its temporary file's length, less the last
        chunk (written in parallel, it may have holes); else 0."""
        if not self.job.resume:
            return 0
        st = await self.files.lstat(tmp)
        if st is None or st.kind != FILE or st.size > size:
            return 0
        return max(0, (st.size // CHUNK) * CHUNK - RESUME_BACK)

    async def _holds(self, path: str, sha256: str, size: int) -> bool:
        """Whether the host's file at `path` has the SHA-256 `sha256` (read back over
        SFTP, `size` bytes at most, when no tool of the host's says)."""
        sums = await self.sums([path])
        if sums is not None and path in sums:
            return sums[path] == sha256
        digest = hashlib.sha256()

        class _Hash:
            def write(self, data: bytes) -> int:
                digest.update(data)
                return len(data)

        try:
            await self.files.fetch(path, _Hash(), 0, lambda n: None, self.alive, size=size)  # type: ignore[arg-type]
        except CopyFailed:  # more than was sent
            return False
        return digest.hexdigest() == sha256

    async def _put_sudo(self, src: Manifest, dest: str) -> bool:
        """A file installed through sudo: staged in the spool, then placed by one
        command (as the user named) with the owner and mode asked for."""
        job = self.job
        if src.is_dir:
            raise CopyFailed("put --sudo copies one file (put a directory without --sudo, or an archive)")
        if self.remote is None:
            raise CopyFailed("put --sudo needs a host that runs commands")
        entry = src.entries[0]
        mode = job.mode if job.mode is not None else entry.mode
        sums = await self.sums([dest])
        try:
            st = await self.files.lstat(dest)
        except CopyFailed:  # the login user may not see it: only sudo's user can
            st = None
        if sums is not None and sums.get(dest) == entry.sha256 and not job.owner and st and st.mode == mode:
            self.moved(entry.size)
            return True
        stage = self.base + ".put"
        install = Spot(self.spot.session, self.spot.action + ".i", self.spot.alias)
        state = await self.remote.probe(install) if job.resume else "none"
        if state == "none":
            self.temps.add(stage)
            offset = await self._resume_at(stage, entry.size)
            self.moved(offset)
            await self.files.send(self._local(entry), stage, offset, self.moved, self.alive)
            if not await self._holds(stage, entry.sha256, entry.size):
                raise CopyFailed(f"{dest}: what the host received is not what was sent (SHA-256 differs)")
            command = INSTALL.format(
                script=shlex.quote(_INSTALL_SH),
                user=shlex.quote(job.sudo or "root"),
                tmp=shlex.quote(temp_name(dest, self.spot)),
                dest=shlex.quote(dest),
                owner=shlex.quote(job.owner or ""),
                mode=shlex.quote(f"{mode:o}"),
                stage=shlex.quote(stage),
            )
            ended = await self.remote.run(command, spot=install, timeout=self.left(), output=self.output)
        elif state.startswith("status "):
            code = state.split()[1]
            ended = Exec("ok" if code == "0" else "failed", int(code) if code.isdigit() else None, 0.0)
        elif state == "lost":
            raise CopyFailed("the install through sudo was started before, and nobody is left to say its end")
        else:
            ended = await self.remote.follow(install, timeout=self.left(), output=self.output)
        with contextlib.suppress(CopyFailed):
            await self.files.remove(stage)
        self.temps.discard(stage)
        if ended.outcome != "ok":
            why = ended.message or f"exit status {ended.exit_status}"
            raise CopyFailed(f"installing {dest} through sudo failed: {why}")
        return False


def _same_size(st: Stat | None, e: Entry) -> bool:
    return st is not None and st.kind == FILE and st.size == e.size
