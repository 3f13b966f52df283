"""ClusterShell's group sources through its own resolver: groups.d YAML without a
groups.conf, upcall sources bounded in time and output, and the names cache."""

from __future__ import annotations

import inspect
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsh.inventory.base import GroupSource, InventoryError
from dsh.inventory.clustershell import ClusterShellGroups, NamesCache, config_paths

SITE_YAML = """\
site:
  web: 'web[1-3]'
  db: db1,db2
  front: '@web,@db'
  empty:
other:
  x: 'x[01-02]'
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    """A ClusterShell configuration directory with groups.d/site.yaml."""
    write(tmp_path / "clustershell" / "groups.d" / "site.yaml", SITE_YAML)
    return tmp_path / "clustershell"


def upcalls(cfgdir: Path, sections: str, timeout: float = 0.5) -> ClusterShellGroups:
    """Groups from a groups.conf in `cfgdir` holding `sections` after its [Main]."""
    main = "[Main]\ndefault: up\nautodir: $CFGDIR/groups.d\n\n"
    conf = write(cfgdir / "groups.conf", main + sections)
    return ClusterShellGroups(environ={}, config=[str(conf)], timeout=timeout)


def group_alive(pgid: int) -> list[int]:
    """The processes of process group `pgid` that are not zombies."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(check, bound: float = 1.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the search path and groups.d without groups.conf


def test_the_search_path_comes_from_the_environment_given() -> None:
    paths = config_paths({"HOME": "/h", "XDG_CONFIG_HOME": "/x", "CLUSTERSHELL_CFGDIR": "/c"})
    assert paths == [
        "/etc/clustershell/groups.conf",
        "/h/.local/etc/clustershell/groups.conf",
        "/x/clustershell/groups.conf",
        "/c/groups.conf",
    ]
    assert config_paths({"HOME": "/h"})[-1] == "/h/.config/clustershell/groups.conf"


def test_groups_d_yaml_under_xdg_config_home_without_groups_conf(cfgdir: Path, tmp_path: Path) -> None:
    groups = ClusterShellGroups(environ={"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path)})
    assert not (cfgdir / "groups.conf").exists()
    assert groups.sources() == ["site", "other"]
    assert groups.default() == "site"
    assert groups.members("web") == "web[1-3]"
    assert groups.members("front") == "db[1-2],web[1-3]"  # its @web and @db resolved by ClusterShell
    assert groups.members("empty") == ""
    assert groups.members("nope") is None
    assert groups.members("x", "other") == "x[01-02]"
    assert groups.members("web", "other") is None
    assert groups.names() == ["db", "empty", "front", "web"]
    assert groups.names("other") == ["x"]


def test_groups_d_under_home_local_etc_is_read_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / ".local" / "etc" / "clustershell" / "groups.d" / "lab.yaml", "lab:\n  bench: b[1-2]\n")
    groups = ClusterShellGroups(environ={"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert groups.members("bench", "lab") == "b[1-2]"


def test_no_configuration_at_all_has_no_source_and_no_group(tmp_path: Path) -> None:
    groups = ClusterShellGroups(environ={}, config=[str(tmp_path / "groups.conf")])
    assert groups.sources() == [] and groups.default() is None
    assert groups.members("web") is None and groups.names() == []
    with pytest.raises(InventoryError, match=r"no group source 'site' .*: it has no source"):
        groups.members("web", "site")


# -- groups.conf: a YAML source through its autodir, an upcall source


def test_a_groups_conf_with_a_yaml_source_and_an_upcall_source(cfgdir: Path) -> None:
    groups = upcalls(
        cfgdir,
        "[up]\n"
        "map: case $GROUP in a) echo h[1-3];; b) echo @site:web h9;;"
        " here) pwd;; me) echo $SOURCE;; *) exit 0;; esac\n"
        "list: echo a b\n",
    )
    assert groups.sources() == ["up", "site", "other"]
    assert groups.default() == "up"
    assert groups.members("a") == "h[1-3]"
    assert groups.members("b") == "h9,web[1-3]"
    assert groups.members("here") == str(cfgdir)  # cwd: the source's cfgdir
    assert groups.members("me") == "up"
    assert groups.members("unknown") is None  # an empty answer
    assert groups.members("web", "site") == "web[1-3]"
    assert groups.names() == ["a", "b"]
    view: GroupSource = groups.source("up")  # (mypy checks it is one)
    assert view.name == "up"
    assert view.members("a") == "h[1-3]" and view.names() == ["a", "b"]


def test_a_failing_map_upcall_means_no_such_group(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: [ $GROUP = a ] && echo h1 || exit 1\n")
    assert groups.members("a") == "h1"
    assert groups.members("b") is None
    assert groups.names() == []  # no list upcall: nothing to offer


def test_a_failing_list_upcall_is_a_sentence_with_its_status_and_stderr(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: echo h1\nlist: echo broken >&2; exit 3\n")
    with pytest.raises(InventoryError) as caught:
        groups.names()
    assert str(caught.value) == (
        "group source 'up': its list upcall exited with status 3 saying 'broken':"
        f" echo broken >&2; exit 3 ({cfgdir / 'groups.conf'})"
    )


def test_a_yaml_group_naming_a_failing_upcall_group_is_a_sentence(cfgdir: Path) -> None:
    write(cfgdir / "groups.d" / "mix.yaml", "mix:\n  via: '@up:gone'\n")
    groups = upcalls(cfgdir, "[up]\nmap: exit 4\n")
    with pytest.raises(
        InventoryError, match=r"^group source 'up': its map upcall exited with status 4: exit 4"
    ):
        groups.members("via", "mix")


def test_an_unknown_source_is_a_sentence(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: echo h1\n")
    for call in (
        lambda: groups.members("a", "nope"),
        lambda: groups.names("nope"),
        lambda: groups.source("nope"),
    ):
        with pytest.raises(
            InventoryError, match=r"no group source 'nope' .*: its sources are up, site, other"
        ):
            call()


# -- bounds


def test_a_hanging_upcall_times_out_and_its_process_group_is_killed(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: echo $$$$ > $CFGDIR/pid; sleep 60\n")
    start = time.monotonic()
    with pytest.raises(InventoryError) as caught:
        groups.members("a")
    took = time.monotonic() - start
    assert str(caught.value) == (
        "group source 'up': its map upcall did not answer within 0.5 s:"
        f" echo $$$$ > $CFGDIR/pid; sleep 60 ({cfgdir / 'groups.conf'})"
    )
    assert 0.5 <= took < 1.5
    pgid = int((cfgdir / "pid").read_text())
    assert wait_for(lambda: not group_alive(pgid)), group_alive(pgid)


def test_a_child_that_ignores_sigterm_and_holds_stdout_is_killed_too(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: (trap '' TERM; exec sleep 60) & echo $! > $CFGDIR/pid; echo h1\n")
    start = time.monotonic()
    with pytest.raises(InventoryError, match=r"did not answer within 0\.5 s"):
        groups.members("a")
    assert time.monotonic() - start < 1.5
    pid = int((cfgdir / "pid").read_text())
    assert wait_for(lambda: gone(pid))


def test_an_upcall_that_writes_without_end_is_cut_at_the_output_cap(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: echo $$$$ > $CFGDIR/pid; exec yes\n", timeout=5)
    start = time.monotonic()
    with pytest.raises(InventoryError, match=r"^group source 'up': its map upcall wrote more than 16 MiB: "):
        groups.members("a")
    assert time.monotonic() - start < 2
    pgid = int((cfgdir / "pid").read_text())
    assert wait_for(lambda: not group_alive(pgid))


def test_clustershell_cache_time_stays_in_force(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: echo x >> $CFGDIR/calls; echo h1\ncache_time: 3600\n")
    assert groups.members("a") == groups.members("a") == "h1"
    assert (cfgdir / "calls").read_text() == "x\n"


def test_a_group_too_large_to_build_is_refused_at_once(cfgdir: Path) -> None:
    write(cfgdir / "groups.d" / "big.yaml", "big:\n  huge: 'h[1-100000000]'\n  via: '@huge'\n")
    groups = upcalls(cfgdir, "[up]\nmap: echo h1\n")
    start = time.monotonic()
    for group in ("huge", "via"):
        with pytest.raises(InventoryError, match="group 'huge' may hold up to 100000000 hosts"):
            groups.members(group, "big")
    assert time.monotonic() - start < 1


# -- broken configurations


def test_broken_yaml_names_its_file(cfgdir: Path) -> None:
    broken = write(cfgdir / "groups.d" / "zz.yaml", "- a list\n")
    groups = ClusterShellGroups(environ={}, config=[str(cfgdir / "groups.conf")])
    with pytest.raises(InventoryError, match=f"cannot be read: {broken}: invalid content"):
        groups.sources()


def test_a_section_without_map_names_the_file(cfgdir: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nlist: echo a\n")
    with pytest.raises(
        InventoryError, match=rf"\({cfgdir / 'groups.conf'}\) cannot be read: No option 'map'"
    ):
        groups.default()


def test_a_group_that_is_no_text_and_a_cycle_are_sentences(cfgdir: Path) -> None:
    write(cfgdir / "groups.d" / "odd.yaml", "odd:\n  five: 5\n  a: '@b'\n  b: '@a'\n")
    groups = ClusterShellGroups(environ={}, config=[str(cfgdir / "groups.conf")])
    for group in ("five", "a"):
        with pytest.raises(InventoryError, match=rf"^group source 'odd' \({cfgdir}/groups.d/odd.yaml\): "):
            groups.members(group, "odd")


def test_a_group_name_clustershell_would_read_as_a_pattern_is_refused(cfgdir: Path) -> None:
    groups = ClusterShellGroups(environ={}, config=[str(cfgdir / "groups.conf")])
    with pytest.raises(InventoryError, match="cannot name a group"):
        groups.members("web,db")


# -- what dsh relies on in ClusterShell


def test_clustershell_still_has_what_the_bounded_upcalls_replace() -> None:
    from ClusterShell.NodeUtils import GroupResolver, GroupResolverConfig, UpcallGroupSource

    assert list(inspect.signature(UpcallGroupSource._upcall_read).parameters) == ["self", "cmdtpl", "args"]
    assert "self._upcall_read(upcall, args)" in inspect.getsource(UpcallGroupSource._upcall_cache)
    assert list(inspect.signature(GroupResolverConfig._parse_config).parameters) == ["self", "cfg_dirname"]
    assert list(inspect.signature(GroupResolver._source).parameters) == ["self", "namespace"]


def test_importing_the_module_does_not_import_clustershell() -> None:
    code = "import sys, dsh.inventory.clustershell; assert 'ClusterShell' not in sys.modules, sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- the names cache


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(cfgdir: Path, tmp_path: Path) -> tuple[NamesCache, Clock]:
    groups = upcalls(cfgdir, "[up]\nmap: echo h1\nlist: echo a b\n")
    clock = Clock()
    return NamesCache(tmp_path / "state" / "groups.json", groups, ttl=300, clock=clock), clock


OFFERED = ["a", "b", "other:x", "site:db", "site:empty", "site:front", "site:web", "up:a", "up:b"]


def test_the_cache_is_written_privately_and_answers_at_once(cache: tuple[NamesCache, Clock]) -> None:
    names, clock = cache
    assert names.names() == [] and names.stale()
    assert names.refresh() == OFFERED
    st = os.lstat(names.path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(names.path.parent).st_mode) == 0o700
    assert [p.name for p in names.path.parent.iterdir()] == ["groups.json"]  # no temp file left
    data = json.loads(names.path.read_text())
    assert data["v"] == 1 and data["at"] == clock.now and data["default"] == "up"
    assert data["names"]["up"] == ["a", "b"]
    assert names.names() == OFFERED and not names.stale()
    clock.now += 301
    assert names.stale() and names.names() == OFFERED  # stale, still offered until refreshed


def test_a_source_that_fails_is_left_out_of_the_cache(cfgdir: Path, tmp_path: Path) -> None:
    groups = upcalls(cfgdir, "[up]\nmap: echo h1\nlist: sleep 60\n", timeout=0.2)
    names = NamesCache(tmp_path / "groups.json", groups)
    assert names.refresh() == ["other:x", "site:db", "site:empty", "site:front", "site:web"]


@pytest.mark.parametrize(
    "text", ["not json", '{"v": 2}', '{"v": 1, "at": 1, "names": {"s": [1]}, "default": null}']
)
def test_a_corrupt_cache_is_ignored_and_replaced(cache: tuple[NamesCache, Clock], text: str) -> None:
    names, _ = cache
    write(names.path, text)
    assert names.names() == [] and names.stale()
    names.refresh()
    assert names.names() == OFFERED


def test_a_symlinked_cache_is_refused_and_replaced(cache: tuple[NamesCache, Clock], tmp_path: Path) -> None:
    names, _ = cache
    names.refresh()
    elsewhere = tmp_path / "elsewhere.json"
    names.path.rename(elsewhere)
    names.path.symlink_to(elsewhere)
    assert names.names() == [] and names.stale()
    names.refresh()
    assert not names.path.is_symlink() and names.names() == OFFERED


def test_a_cache_owned_by_another_user_is_refused(
    cache: tuple[NamesCache, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    names, _ = cache
    names.refresh()
    mine = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: mine + 1)  # the file is now someone else's
    assert names.names() == [] and names.stale()
