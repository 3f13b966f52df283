"""The layers of dsh, held against its imports (read from the AST; imports under
`if TYPE_CHECKING:` are for the type checker only and do not count).

From the top: the command line, the processes it starts and talks to, the
front ends (output, the prompt, explain, configuration), the session (what a
session is in the store), then the runtime and the language side by side
(they meet only through the plan), then the store and the remotes side by side,
the plan, and the base every layer may use. A module may import a lower layer,
and its own group; nothing else, unless `EXCEPTIONS` names the edge with its
reason: each is removed as it is fixed, and an exception that no longer
exists fails the test, so the list stays true.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

#: Groups of modules, by layer (higher imports lower). A name matches a module and
#: the modules of a package of that name.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (7, "cli", ("dsh.cli", "dsh.__main__")),
    (
        6,
        "process",
        (
            "dsh.driver",
            "dsh.daemon",
            "dsh.attached",
            "dsh.client",
            "dsh.recent",
            "dsh.follow",
            "dsh.reach",
            "dsh.readeval",
            "dsh.serve",
            "dsh.housekeeping",
            "dsh.localsocket",
            "dsh.guard",
            "dsh.inprocess",
            "dsh.asking",
            "dsh.questions",
            "dsh.agentrelay",
        ),
    ),
    (5, "front", ("dsh.render", "dsh.explain", "dsh.repl", "dsh.config")),
    (4, "session", ("dsh.session",)),
    (3, "runtime", ("dsh.runtime",)),
    (3, "lang", ("dsh.lang",)),
    (2, "store", ("dsh.store",)),
    (2, "remote", ("dsh.remote",)),
    (2, "inventory", ("dsh.inventory",)),
    (1, "plan", ("dsh.plan",)),
    (
        0,
        "base",
        (
            "dsh",
            "dsh.errors",
            "dsh.exits",
            "dsh.record",
            "dsh.names",
            "dsh.bytestext",
            "dsh.nodeset",
            "dsh.state",
            "dsh.prompt",
            "dsh.filesize",
            "dsh.wholefile",
            "dsh.osuser",
        ),
    ),
]

#: Edges the layers do not allow, each with its reason, until it is fixed.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def group_of(module: str) -> tuple[int, str]:
    best: tuple[int, str, int] | None = None
    for layer, name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[2]
            ):
                best = (layer, name, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0], best[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


#: The packages whose imports the tests below look at.
PACKAGES = ("dsh", "tests", "json", "asyncssh", "aetcd", "grpc", "prompt_toolkit", "rich", "h11")


def imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that `path` imports (at run time), as dotted names."""
    return set(_import_table()[str(path.relative_to(ROOT))][package])


@functools.cache
def _import_table() -> dict[str, dict[str, list[str]]]:
    """Every file's imports, read in a fresh interpreter: CPython 3.11's ast module keeps
    its recursion count per interpreter, and another thread of the test process (grpc's
    pollers run Python code) can interleave with a parse and fail it with "AST
    constructor recursion depth mismatch" (gh-106905)."""
    out = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    table: dict[str, dict[str, list[str]]] = json.loads(out)
    return table


def _read_imports() -> dict[str, dict[str, list[str]]]:
    table: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.joinpath("dsh").rglob("*.py")) + sorted(ROOT.joinpath("tests").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        table[str(path.relative_to(ROOT))] = {p: sorted(_imports_of(tree, p)) for p in PACKAGES}
    return table


def _imports_of(tree: ast.Module, package: str) -> set[str]:
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            module = node.module or ""
            if node.level or module.split(".")[0] != package:
                return
            for alias in node.names:  # `from dsh import plan` names a module; `from dsh.x import y` not
                candidate = f"{module}.{alias.name}"
                found.add(candidate if _exists(candidate) else module)

    Visitor().visit(tree)
    return found


def _exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def edges() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "dsh").rglob("*.py")):
        module = _module_name(path)
        found |= {(module, target) for target in imports(path, "dsh") if target != module}
    return found


def allowed(source: str, target: str) -> bool:
    (s_layer, s_group), (t_layer, t_group) = group_of(source), group_of(target)
    return s_group == t_group or s_layer > t_layer


def test_every_import_goes_down_the_layers() -> None:
    wrong = sorted(e for e in edges() if not allowed(*e) and e not in EXCEPTIONS)
    assert wrong == [], "imports against the layers (fix them, or name them in EXCEPTIONS):\n" + "\n".join(
        f"  {s} -> {t}  ({group_of(s)[1]} -> {group_of(t)[1]})" for s, t in wrong
    )


def test_every_exception_still_exists_and_is_against_the_layers() -> None:
    found = edges()
    stale = sorted(e for e in EXCEPTIONS if e not in found or allowed(*e))
    assert stale == [], f"exceptions that no longer apply: remove them from EXCEPTIONS: {stale}"


def test_lang_and_runtime_meet_only_through_the_plan() -> None:
    crossing = sorted((s, t) for s, t in edges() if {group_of(s)[1], group_of(t)[1]} == {"lang", "runtime"})
    assert crossing == []


def test_every_third_party_library_has_one_adapter() -> None:
    """asyncssh imported only by remote/sshrun.py (behind its warnings filter; ssh.py and
    sftp.py take it from there), the etcd client
    only in the etcd store and its auth adapter, prompt-toolkit only under repl/, rich
    only in the renderer, h11 only in serve."""
    owners = {
        "asyncssh": {"dsh.remote.sshrun"},
        "aetcd": {"dsh.store.etcd", "dsh.store.etcdauth"},  # etcdauth: its Auth and Maintenance RPCs
        "grpc": {"dsh.store.etcd", "dsh.store.etcdauth"},
        "prompt_toolkit": {"dsh.repl", "dsh.cli"},  # cli: patch_stdout around the client, for now
        "rich": {"dsh.render"},
        "h11": {"dsh.serve"},
    }
    wrong: list[str] = []
    for path in sorted((ROOT / "dsh").rglob("*.py")):
        module = _module_name(path)
        for library, where in owners.items():
            if imports(path, library) and not any(module == w or module.startswith(w + ".") for w in where):
                wrong.append(f"{module} imports {library}")
    assert wrong == []


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/helpers/ (or conftest, sshd, etcd), never in a test module."""
    wrong: list[str] = []
    for path in sorted(ROOT.joinpath("tests").rglob("*.py")):
        for target in imports(path, "tests"):
            if target.rsplit(".", 1)[-1].startswith("test_"):
                wrong.append(f"{_module_name(path)} imports {target}")
    assert wrong == []


#: The most lines a module has, unless docs/architecture.md names it (with its reason).
MOST_LINES = 500


def test_no_module_is_over_500_lines_unless_the_architecture_names_it() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("### Modules over 500 lines", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"^- `(dsh/[\w/]+\.py)`", section, re.M))
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in sorted((ROOT / "dsh").rglob("*.py"))
    }
    over = sorted(path for path, lines in sizes.items() if lines > MOST_LINES)
    assert [p for p in over if p not in named] == [], "split these, or name them in docs/architecture.md"
    assert sorted(p for p in named if sizes.get(p, 0) <= MOST_LINES) == [], "no longer over: unname them"


def test_json_is_encoded_and_read_only_by_the_codecs_the_plan_and_the_renderer() -> None:
    """Every durable or wire format has one codec: the session's records
    (session/codec.py), the client<->executor protocol (runtime/protocol.py), the
    plan (plan/codec.py), the cache of ClusterShell's group names for completion
    (inventory/clustershell.py's NamesCache); machine-readable output goes through
    render.json_line."""
    allowed = {"dsh.session.codec", "dsh.runtime.protocol", "dsh.plan.codec", "dsh.render"}
    allowed.add("dsh.inventory.clustershell")
    users = sorted(
        _module_name(path)
        for path in (ROOT / "dsh").rglob("*.py")
        if "json" in imports(path, "json") and _module_name(path) not in allowed
    )
    assert users == []


if __name__ == "__main__":
    json.dump(_read_imports(), sys.stdout)
