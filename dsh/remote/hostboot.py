"""How the host agent gets onto a host: sent over one exec, never installed.

The exec is the wrapper's (`sh -s`, its script on stdin, the tag in its first
line, so that the login shell never parses it). BOOT looks for `python3` and
`exec`s it with STAGE1, a few hundred bytes that say hello on stdout (`TAG agent0
VERSION MAGIC Z`: the interpreter's version, its bytecode magic, whether it has
zlib) and then read one frame from stdin: stage 2. dsh writes stage 2 only after
that hello, so the `sh` that read BOOT (and only what was there) never swallows
it; this is mitogen's handshake, without its fork.

Stage 2 is a loader and the agent's modules (dsh/remote/hostagent, in the order
`MODULES` names): marshalled code objects when the host's magic is this
interpreter's (nothing compiled on the host), else their source; compressed when
the host has zlib. The loader makes them the package `dshagent` and runs
`dshagent.serve.main(TAG)`, which says HELLO in frames (dsh.remote.hostagent.wire).

A host without python3 answers `TAG agent none`, one below 3.6 `TAG agent old
X.Y`: dsh uses the wrapper there. What comes before the hello on stdout is the
login shell's (a motd, rc-file noise): dropped and counted, as the wrapper's
Watch does.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import marshal
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

from dsh.remote import spool

#: The folder of the modules sent to hosts.
AGENT_DIR = Path(__file__).parent / "hostagent"

#: Finds python3 and runs STAGE1 with the exec's tag (`%STAGE1%` is replaced).
BOOT = r"""command -v python3 >/dev/null 2>&1 || { printf '%s agent none\n' "$tag"; exit 0; }
exec python3 -I -S -c '%STAGE1%' dsh-agent "$tag" "${LC_CTYPE+set}" "${LC_CTYPE-}"
"""

#: Says hello, then reads stage 2 (4-byte length, a mode byte, the payload) and
#: runs it. No single quote in it: it is in BOOT's single quotes.
STAGE1 = r"""import os,sys
t=sys.argv[2]
v=sys.version_info
def w(s):
    os.write(1,(t+" "+s+"\n").encode())
if v<(3,6):
    w("agent old %d.%d"%(v[0],v[1]));sys.exit(0)
try:
    import zlib;z=1
except ImportError:
    z=0
import _frozen_importlib_external as e
w("agent0 %d.%d.%d %s %d"%(v[0],v[1],v[2],e.MAGIC_NUMBER.hex(),z))
def r(n):
    b=b""
    while len(b)<n:
        c=os.read(0,n-len(b))
        if not c:
            sys.exit(0)
        b+=c
    return b
n=int.from_bytes(r(4),"big")
m=r(1)
p=r(n-1)
if m in b"MS":
    p=zlib.decompress(p)
g={"TAG":t,"__name__":"dshagent.boot"}
if m in b"Mm":
    import marshal
    c,g["MODS"]=marshal.loads(p)
    exec(c,g)
else:
    exec(compile(p,"dshagent-loader","exec"),g)
"""

#: Makes `MODS` ((name, code or source) pairs, the package's own text first as
#: "__init__") the package `dshagent`, then serves. With sources, MODS is set by
#: the text before it.
LOADER = r"""import sys
P=type(sys)("dshagent")
P.__path__=[]
P.__package__="dshagent"
sys.modules["dshagent"]=P
for name,code in MODS:
    if name=="__init__":
        m=P
    else:
        m=type(sys)("dshagent."+name)
        m.__package__="dshagent"
        sys.modules[m.__name__]=m
        setattr(P,name,m)
    if isinstance(code,str):
        code=compile(code,"dshagent/"+name+".py","exec")
    exec(code,m.__dict__)
sys.modules["dshagent.serve"].main(TAG)
"""

#: The stage-2 frame's bound (dsh's own check of what it sends).
MAX_STAGE2 = 256 * 1024


@dataclass(frozen=True)
class Hello0:
    """A host's first answer: its python3 (version, bytecode magic, zlib), or why
    there is none (`refusal`: "none" or "old X.Y")."""

    version: str = ""
    magic: str = ""
    zlib: bool = False
    refusal: str = ""


def boot_argv() -> list[str]:
    """The argv (spool's form: `as_stdin` makes it `sh -s`'s script) of the boot exec."""
    return spool.script_argv(BOOT.replace("%STAGE1%", STAGE1), "dsh-agent", [])


def parse_hello0(tag: str, line: bytes) -> Hello0 | None:
    """The boot's first answer from a line of its stdout (None: not it)."""
    prefix = tag.encode() + b" agent"
    if not line.startswith(prefix):
        return None
    words = line[len(prefix) :].decode("ascii", "replace").split()
    if words[:1] == ["0"] and len(words) == 4:
        return Hello0(words[1], words[2], words[3] == "1")
    if words[:1] == ["none"]:
        return Hello0(refusal="none")
    if words[:1] == ["old"] and len(words) == 2:
        return Hello0(refusal=f"old {words[1]}")
    return Hello0(refusal="a malformed hello")


def sources() -> list[tuple[str, str]]:
    """The agent's modules as (name, text): the package's own first, then MODULES' order."""
    init = (AGENT_DIR / "__init__.py").read_text(encoding="utf-8")
    names: dict[str, object] = {}
    exec(compile(init, str(AGENT_DIR / "__init__.py"), "exec"), names)
    modules = names.get("MODULES")
    assert isinstance(modules, tuple), "hostagent/__init__.py names no MODULES"
    return [("__init__", init)] + [
        (str(name), (AGENT_DIR / f"{name}.py").read_text(encoding="utf-8")) for name in modules
    ]


def _code(name: str, text: str) -> CodeType:
    """A module's code as this interpreter's import system has it (its bytecode cache:
    nothing compiled when the .pyc is fresh), else compiled from `text`."""
    spec = importlib.util.find_spec(f"{__package__}.hostagent" + ("" if name == "__init__" else f".{name}"))
    if spec is not None and spec.origin == str(AGENT_DIR / f"{name}.py"):  # the sources sent: these
        loader = spec.loader
        if isinstance(loader, importlib.abc.InspectLoader):
            code = loader.get_code(spec.name)
            if code is not None:
                return code
    return compile(text, f"dshagent/{name}.py", "exec")


@functools.lru_cache(maxsize=4)
def stage2(magic: str, compress: bool) -> bytes:
    """The stage-2 frame for a host whose python3 has bytecode `magic` (marshalled
    code when it is this interpreter's), compressed when it has zlib."""
    mods = sources()
    if magic == importlib.util.MAGIC_NUMBER.hex():
        codes = [(name, _code(name, text)) for name, text in mods]
        loader = compile(LOADER, "dshagent-loader", "exec")
        mode, payload = b"m", marshal.dumps((loader, codes))
    else:
        mode, payload = b"s", f"MODS={mods!r}\n{LOADER}".encode()
    if compress:
        mode, payload = mode.upper(), zlib.compress(payload, 6)  # 9: 5 times as long, 1.5 % smaller
    if len(payload) + 1 > MAX_STAGE2:
        raise ValueError(f"the host agent's stage 2 is {len(payload)} bytes, over {MAX_STAGE2}")
    return (len(payload) + 1).to_bytes(4, "big") + mode + payload
