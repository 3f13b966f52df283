"""Limits met from the command line: deep nesting (fault report #7), a plan too large
for the store (#10), host names from bindings (#14), and the lower-priority
findings on store URLs, UTF-8 text and keys."""

from __future__ import annotations

from pathlib import Path

from dsh.lang.compiler import MAX_CALL_DEPTH, Context, compile_source
from dsh.lang.parser import MAX_BLOCK_DEPTH
from dsh.lang.source import Source
from dsh.session.recorder import MAX_PLAN, stored_size
from tests.conftest import SshSetup


def _chain(length: int, bottom: str) -> list[str]:
    fns = [f"fn f{i}() {{ f{i + 1} }}" for i in range(length - 1)]
    return [*fns, f"fn f{length - 1}() {{ {bottom} }}"]


# -- #7 ------------------------------------------------------------------------------------


def test_F7_deep_nesting_and_long_call_chains_exit_2_at_their_position(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nest = tmp_path / "nest.dsh"  # the report's: 500 blocks on one line
    nest.write_text("if $1 == a { " * 500 + "echo deep" + " }" * 500 + "\n")
    chain = tmp_path / "f.dsh"  # and 1000 functions calling each other
    chain.write_text("\n".join([*_chain(1000, "echo bottom"), "f0"]) + "\n")
    for script, says, where in [
        (nest, f"blocks nested too deeply (limit {MAX_BLOCK_DEPTH})", "nest.dsh:1:"),
        (chain, f"calls nested too deeply (limit {MAX_CALL_DEPTH})", f"f.dsh:{MAX_CALL_DEPTH}:12:"),
    ]:
        for args in (["explain", str(script), "a"], [str(script), "a"]):
            r = run_dsh(args)
            assert r.returncode == 2, r.stderr
            assert says in r.stderr and where in r.stderr
            assert "internal error" not in r.stderr and r.stdout == ""


def test_F7_the_deepest_nesting_runs_here_and_on_hosts(run_dsh, ssh_setup: SshSetup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    heads = ["for i in a {" if level % 2 else "if $1 == a {" for level in range(MAX_BLOCK_DEPTH)]
    script = tmp_path / "deep.dsh"
    script.write_text(
        "\n".join(
            [
                *_chain(MAX_CALL_DEPTH, "@h1 echo bottom-$host"),
                *heads,
                "echo here",
                "f0",
                *["}"] * MAX_BLOCK_DEPTH,
            ]
        )
        + "\n"
    )
    r = run_dsh([*ssh_setup.args(), "--session", "deep", str(script), "a"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert "here" in r.stdout.splitlines() and "h1 | bottom-h1" in r.stdout.splitlines()
    log = run_dsh(["log", "deep"])
    assert log.returncode == 0 and "echo here" in log.stdout


# -- #10 -----------------------------------------------------------------------------------


def _script(size: int, marker: Path) -> str:
    return f"touch {marker}\nx = '{'a' * size}'\necho bound\n"


def test_F10_an_oversized_script_is_a_compile_error_everywhere(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "first"
    huge = tmp_path / "huge.dsh"  # the report's: one line of 600 KB
    huge.write_text(f"touch {marker}\necho {'a' * 600_000} | wc -c\n")
    # Short text can make a large plan too: calls expand a 30 KB body 60 times.
    calls = "\n".join([f"touch {marker}", f"fn f() {{ echo {'b' * 30_000} }}", *["f"] * 60])
    for args in (
        ["explain", str(huge)],
        ["--session", "hg", str(huge)],
        ["run", "--session", "hg", str(huge)],
        ["run", "--detach", "--session", "hg2", str(huge)],
        ["--session", "hg3", "-c", calls],
    ):
        r = run_dsh(args)
        assert r.returncode == 2, (args, r.stderr)
        assert "the script's plan is " in r.stderr and f"the store takes at most {MAX_PLAN}" in r.stderr
        assert r.stdout == "" and "internal error" not in r.stderr  # run --detach names no session
        assert len(r.stderr) < 2000  # the line is shown cut around the caret
    assert not marker.exists()  # nothing ran, not even the first line
    assert run_dsh(["ls", "--all"]).stdout == ""


def test_F10_a_plan_just_under_the_limit_is_stored_and_runs(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "first"
    script = tmp_path / "big.dsh"

    def fits(size: int) -> bool:
        plan = compile_source(Source(str(script), _script(size, marker)), Context())
        return stored_size(plan, ())[0] <= MAX_PLAN

    low, high = 100_000, 600_000  # the largest value that fits: low
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    script.write_text(_script(high, marker))
    r = run_dsh(["--session", "big", str(script)])
    assert r.returncode == 2 and "the script's plan is " in r.stderr and not marker.exists()
    script.write_text(_script(low, marker))
    r = run_dsh(["--session", "big", str(script)], timeout=60)
    assert r.returncode == 0, r.stderr  # the store took every record: the count is not short
    assert r.stdout == "bound\n" and marker.exists()


# -- #14 -----------------------------------------------------------------------------------


def test_F14_host_names_from_bindings_are_refused_naming_the_binding(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    line = 'hosts = "$1"\n@$hosts echo $host'
    for name in ("h1/../h2", "..", "h1;id", "h1$(id)", "a@b", "h1:22", "h1'x", "h1 h2"):
        r = run_dsh([*ssh_setup.args(), "-c", line, name])  # known when compiled
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert "$hosts holds" in r.stderr and repr(name) in r.stderr and "cannot name a host" in r.stderr
        assert " | " not in r.stdout
    # From a host's output, known only when the line starts: `Host h*` would match it.
    r = run_dsh([*ssh_setup.args(), "-c", "r = @h1 printf 'h1;id'\nfor h in ${r.out} { @$h echo $host }"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "$h holds 'h1;id', which cannot name a host" in r.stderr and "h1;id |" not in r.stdout
    r = run_dsh([*ssh_setup.args(), "-c", line, "h[1-2]"])
    assert r.returncode == 0, r.stderr
    assert {"h1 | h1", "h2 | h2"} <= set(r.stdout.splitlines())


# -- lower-priority observations ---------------------------------------------------------------


def test_low_a_malformed_store_url_is_a_usage_error(run_dsh) -> None:  # type: ignore[no-untyped-def]
    for url in ("etcd://[::1", "etcd://::1:2379", "etcd://[zz]:2379", "etcd://h$:2379"):
        r = run_dsh(["--store", url, "-c", "true"])
        assert r.returncode == 2, (url, r.stderr)
        assert "is not HOST:PORT" in r.stderr and "cannot resolve" not in r.stderr


def test_low_c_text_that_is_not_utf8_is_refused_at_its_byte(run_dsh) -> None:  # type: ignore[no-untyped-def]
    for args in (["-c", "echo a\udcffb"], ["explain", "echo a\udcffb"]):  # the byte 0xff in argv
        r = run_dsh(args)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.splitlines()[0].endswith(":1:7: not UTF-8 text (byte 0xff, at byte 6)")
    r = run_dsh(["-c", 'printf %s "$1" | od -An -tx1', "a\udcffb"])  # an argument may hold any bytes
    assert r.returncode == 0 and r.stdout.split() == ["61", "ff", "62"]


def test_low_await_key_and_dsh_key_refuse_the_same_keys(run_dsh) -> None:  # type: ignore[no-untyped-def]
    put = run_dsh(["key", "put", "", "v"])
    wait = run_dsh(["explain", 'await key "" within 1s'])
    assert put.returncode == wait.returncode == 2
    sentence = "'' cannot be a key (1 to 256 characters, no blanks or control characters)"
    assert put.stderr == f"dsh: {sentence}\n"
    assert wait.stderr.splitlines()[0].endswith(f":1:11: {sentence}")
    r = run_dsh(["-c", 'k = ""\nawait key $k within 5s'])  # from a binding: the await fails at once
    assert r.returncode == 1 and sentence in r.stderr


def test_low_subms_durations_are_refused_in_the_configuration_too(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "dsh.toml"
    config.write_text('[limits]\ndefault_timeout = "0.5ms"\n')
    r = run_dsh(["--config", str(config), "explain", "true"])
    assert r.returncode == 2 and "limits.default_timeout must be a duration of at least 1ms" in r.stderr
    r = run_dsh(["explain", "true | within 0.4ms"])
    assert r.returncode == 2 and "0.4ms is shorter than 1ms: a duration must be at least 1ms" in r.stderr
