"""Copies, `put` and `get`: their syntax to `plan.Copy`, the rules of their paths
(with the caret of each refusal), their timeouts, and what stays a command."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dsh import plan as p
from dsh.errors import LangError
from dsh.explain import explain
from dsh.filesize import local_size
from dsh.lang.compiler import Limits
from dsh.lang.lexer import Kind, tokenize
from dsh.lang.source import Source
from tests.helpers.lang import compile_text, error

HOST = p.Var("host", None, "raw")


def text(*parts: str | p.Var) -> p.Text:
    return p.Text(tuple(p.Lit(x) if isinstance(x, str) else x for x in parts))


def run_of(source: str, **ctx: object) -> p.Run:
    stmt = compile_text(source, **ctx).statements[-1]
    assert isinstance(stmt, p.Run), stmt
    return stmt


def copy_of(source: str, **ctx: object) -> p.Copy:
    stage = run_of(source, **ctx).pipeline.stages[0]
    assert isinstance(stage, p.Copy), stage
    return stage


def at(source: str, line: int, column: int, words: str, **ctx: object) -> LangError:
    """The error `source` is refused with: its words, and a caret at line:column."""
    err = error(source, **ctx)
    assert words in err.message, err.message
    assert (err.span.line, err.span.column) == (line, column), err.render()
    head, _shown, caret = err.render().split("\n")
    assert head.startswith(f"t.dsh:{line}:{column}: ")
    assert caret.index("^") - 2 == column - 1
    return err


# -- the forms -----------------------------------------------------------------------


def test_put_to_every_host_with_host_in_the_remote_path() -> None:
    run = run_of("put ./f @h[1-3]:/tmp/x.$host")
    assert run.pipeline.target == p.HostSet("@h[1-3]", "h[1-3]", 3)
    assert run.pipeline.stages == (
        p.Copy(p.PUT, text("./f"), text("/tmp/x.", HOST), "put ./f @h[1-3]:/tmp/x.$host", 600.0),
    )
    assert run.bound == p.Bound(3, 3, 600.0 + p.STOP_SECONDS)
    assert run.unbound == ()


def test_get_from_every_host_into_a_path_per_host() -> None:
    run = run_of("get @h[1-3]:/tmp/x.$host got/$host/f")
    assert run.pipeline.stages == (
        p.Copy(
            p.GET,
            text("got/", HOST, "/f"),
            text("/tmp/x.", HOST),
            "get @h[1-3]:/tmp/x.$host got/$host/f",
            600.0,
        ),
    )


@pytest.mark.parametrize(
    ("source", "sudo", "owner", "mode", "local"),
    [
        ("put f @h:/x", None, None, None, "f"),
        ("put --sudo f @h:/x", "root", None, None, "f"),
        ("put --sudo www f @h:/x", "www", None, None, "f"),
        ("put --sudo --mode 755 f @h:/x", "root", None, 0o755, "f"),
        ("put --mode 0644 --sudo www-data f @h:/x", "www-data", None, 0o644, "f"),
        ("put --sudo www --owner www:adm --mode 0644 f @h:/x", "www", "www:adm", 0o644, "f"),
        ("put --owner 1000:1000 --mode 4755 f @h:/x", None, "1000:1000", 0o4755, "f"),
        ("put --owner=app --mode=600 --sudo=deploy f @h:/x", "deploy", "app", 0o600, "f"),
        ("put --mode 7777 -weird @h:/x", None, None, 0o7777, "-weird"),  # PATH: the last word
        ("put --sudo '--sudo' @h:/x", "root", None, None, "--sudo"),  # quoted: a path
    ],
)
def test_put_options(source: str, sudo: str | None, owner: str | None, mode: int | None, local: str) -> None:
    copy = copy_of(source)
    assert (copy.sudo, copy.owner, copy.mode, copy.local) == (sudo, owner, mode, text(local))
    assert copy.written == source


@pytest.mark.parametrize(
    ("rpath", "remote"),
    [
        ("/etc/app.conf", "/etc/app.conf"),
        ("app.conf", "app.conf"),  # relative: under the login user's home
        ("~/app.conf", "app.conf"),
        ("~//etc/x", "etc/x"),  # still under the home
        ("'/a b'", "/a b"),
        ("'~/x'", "~/x"),  # quoted: no ~ of the home, as in sh
        ("'$x'", "$x"),  # single quotes: no $ of dsh's
    ],
)
def test_remote_paths(rpath: str, remote: str) -> None:
    assert copy_of(f"put f @h:{rpath}").remote == text(remote)


def test_a_comment_after_a_path_is_a_comment() -> None:
    assert copy_of("put f @h:/x # the config").remote == text("/x")
    (loop,) = compile_text("for h in @w[1-2] { put f @$h:/y}").statements  # the block's }
    assert isinstance(loop, p.For) and isinstance(loop.body[0], p.Run)
    assert loop.body[0].pipeline.stages[0] == p.Copy(p.PUT, text("f"), text("/y"), "put f @$h:/y", 600.0)


def test_bindings_and_arguments_expand_in_both_paths() -> None:
    copy = copy_of('d = /srv\nr = echo v\nput "$d/${r.out}.tgz" @h:$d/$host/${r.out}')
    assert copy.local == text(p.Var("d", None, "raw"), "/", p.Var("r", "out", "raw"), ".tgz")
    assert copy.remote == text(p.Var("d", None, "raw"), "/", HOST, "/", p.Var("r", "out", "raw"))
    copy = copy_of("put $1 @h:$2", args=("a", "b"))
    assert (copy.local, copy.remote) == (text(p.Var("1", None, "raw")), text(p.Var("2", None, "raw")))


@pytest.mark.parametrize(
    ("target", "pattern", "size"),
    [
        ("@web[01-04]", "web[01-04]", 4),
        ("@{web}", "@inv:web", 2),
        ("@{failed}", "@res:failed", None),
        ("@$hosts", "@var:hosts", None),
        ("@h1,h2!h2", "h1,h2!h2", 1),
    ],
)
def test_the_target_is_a_commands_and_a_colon_ends_it(target: str, pattern: str, size: int | None) -> None:
    run = run_of(f"hosts = @a[1-2]\nput f {target}:/tmp/f", groups={"web": "w[1-2]"})
    assert run.pipeline.target is not None
    assert (run.pipeline.target.pattern, run.pipeline.target.size) == (pattern, size)
    assert run.pipeline.target.written == target


def test_the_lexer_ends_a_copys_target_at_the_colon() -> None:
    toks = [(t.kind, t.text) for t in tokenize(Source("t", "put f @h[1-3]:'/tmp/a b' | within 5s"))]
    assert toks[:6] == [
        (Kind.KEYWORD, "put"),
        (Kind.WORD, "f"),
        (Kind.TARGET, "@h[1-3]"),
        (Kind.COLON, ":"),
        (Kind.STRING, "'/tmp/a b'"),
        (Kind.PIPE, "|"),
    ]


# -- what stays a command -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "command"),
    [
        ("@h1 cat f | sudo tee /tmp/x", "cat f | sudo tee /tmp/x"),
        ("@h1 get-something", "get-something"),
        ("@h1 put x", "put x"),
        ("@h1 echo put get", "echo put get"),
        ("command put x @h:/y", "command put x @h:/y"),
        ("command get @h:/y x", "command get @h:/y x"),
        ("ls | command put x", "ls | command put x"),
        ("cat f | put.sh", "cat f | put.sh"),
        ("put=3 env", "put=3 env"),
        ("echo put | tr a-z A-Z", "echo put | tr a-z A-Z"),
    ],
)
def test_common_command_names_stay_commands(source: str, command: str) -> None:
    (stage,) = run_of(source).pipeline.stages
    assert isinstance(stage, p.Command)
    assert stage.written == command


def test_a_word_alone_on_the_right_of_equals_is_a_value() -> None:
    (bind,) = compile_text("x = get").statements
    assert isinstance(bind, p.Bind) and bind.value == text("get")


# -- stages after a copy -------------------------------------------------------------------


def test_retry_and_within_apply_to_the_copy() -> None:
    run = run_of("put f @h[1-2]:/x | retry 2 | within 5s")
    (copy,) = run.pipeline.stages
    assert isinstance(copy, p.Copy)
    assert (copy.timeout, copy.retries, copy.backoff, copy.attempts) == (5.0, 2, 1.0, 3)
    assert run.bound == p.Bound(2, 6, 3 * (5 + p.STOP_SECONDS) + 1 + 2)
    copy = copy_of("get @h1:/x f | within 1h | retry 1 backoff 3s")
    assert (copy.timeout, copy.retries, copy.backoff) == (3600.0, 1, 3.0)


def test_stages_after_a_copy_run_on_its_hosts() -> None:
    run = run_of("put f @h[1-4]:/x | systemctl reload x | within 1m | where ok | gather | batch 2")
    assert run.pipeline.target is not None and run.pipeline.target.pattern == "h[1-4]"
    copy, reload, where, gather = run.pipeline.stages
    assert isinstance(copy, p.Copy) and copy.timeout == 600.0
    assert isinstance(reload, p.Command) and (reload.written, reload.timeout) == ("systemctl reload x", 60.0)
    assert (where, gather, run.pipeline.batch) == (p.Where("ok"), p.Gather(), p.Batch(2))
    assert run.bound.steps == 8


def test_a_copy_in_if_for_fn_and_a_binding() -> None:
    plan = compile_text(
        "fn push(h) { put f @$h:/tmp/$h }\n"
        "if put f @h1:/x { echo ok } else { get @h1:/x g }\n"
        "for h in @web[1-2] { put f @$h:/tmp/f }\n"
        "push web1\n"
        "r = put f @h1:/x | within 10s"
    )
    iff, loop, arg, call, bind = plan.statements
    assert isinstance(iff, p.If) and isinstance(iff.cond, p.Run)
    assert isinstance(iff.cond.pipeline.stages[0], p.Copy)
    (orelse,) = iff.orelse
    assert isinstance(orelse, p.Run) and isinstance(orelse.pipeline.stages[0], p.Copy)
    assert isinstance(loop, p.For) and loop.count == 2
    assert isinstance(arg, p.Bind) and arg.name == "push-h"
    assert isinstance(call, p.Run)
    pushed = call.pipeline.stages[0]
    assert isinstance(pushed, p.Copy) and pushed.remote == text("/tmp/", p.Var("push-h", None, "raw"))
    assert isinstance(bind, p.Bind) and isinstance(bind.value, p.Pipeline)
    assert isinstance(bind.value.stages[0], p.Copy) and bind.value.stages[0].timeout == 10.0


# -- refusals, each where it is written ---------------------------------------------------


@pytest.mark.parametrize(
    ("source", "column", "words"),
    [
        # Only the $ names dsh binds: no shell reads a copy's path.
        ("put f @h:$HOME/x", 10, "$HOME is not bound by dsh: a copy's path is not read by a shell"),
        ("put f @h:${HOME}/x", 10, "relative to the home directory"),
        ("put $HOME/f @h:/x", 5, "relative to the working directory"),
        ('put "a/$x" @h:/x', 8, "$x is not bound by dsh"),
        ("put f @h:/tmp/$(date)", 15, "$( is not a name dsh binds"),
        ("put f @h:/tmp/$1", 15, "$1 is not bound by dsh"),  # no script arguments
        ("put f @h:/x${y.out}", 12, "not bound"),
        # ~ is the home on a remote path only, and only ~/.
        ("put f @h:~www/x", 10, "~www is not expanded"),
        ("put f @h:~$u/x", 10, "~$u is not expanded"),
        ("put ~/f @h:/x", 5, "~ is not expanded in a copy's path on this machine"),
        ("put f @h:~", 10, "the home directory is not a file"),
        ("put f @h:~/", 10, "the home directory is not a file"),
        # Empty paths, missing pieces, extra words.
        ("put '' @h:/x", 5, "cannot be empty"),
        ('put f @h:""', 10, "cannot be empty"),
        ("put f @h: /x", 9, "the remote path is missing"),
        ("put f @h:", 9, "the remote path is missing"),
        ("put f @h /x", 7, "followed by ':'"),
        ("put @h:/x", 5, "needs the local path"),
        ("put f", 5, "needs hosts and a remote path"),
        ("put", 1, "needs hosts and a remote path"),
        ("get f @h:/x g", 5, "get takes the hosts first"),
        ("get @h:/x", 8, "get needs the local path to write"),
        ("put f @h:/x extra", 13, "a copy has one target and two paths"),
        ("get @h:/x f g", 13, "a copy has one target and two paths"),
        ("put f @a:/x @b:/y", 13, "a copy has one target and two paths"),
        # A path is one word or one string: never cut short, never glued to another.
        ("put f @h:/x#frag", 12, "would cut the path short"),
        ("get @h:/x a#b", 12, "would cut the path short"),
        ("put f @h:/x'y'", 12, "one word or one quoted string"),
        ("put 'a'b @h:/x", 8, "one word or one quoted string"),
        ("put f @h:/x{1}", 12, "one word or one quoted string"),
        # Options.
        ("put --mode 8 f @h:/x", 12, "'8' is not a mode"),
        ("put --mode 17777 f @h:/x", 12, "is not a mode"),
        ("put --mode u+x f @h:/x", 12, "is not a mode"),
        ("put --mode=0x1 f @h:/x", 12, "is not a mode"),
        ("put --mode ７５５ f @h:/x", 12, "is not a mode"),
        ("put --mode f @h:/x", 5, "--mode needs the mode"),
        ("put --owner f @h:/x", 5, "--owner needs the owner"),
        ("put --owner -x f @h:/x", 13, "'-x' is not a user name"),
        ("put --owner www: f @h:/x", 13, "'' is not a group name"),
        ("put --owner 'a b' f @h:/x", 13, "is not a user name"),
        ("put --sudo 'r;m' f @h:/x", 12, "is not a user name"),
        ("put --owner $u f @h:/x", 13, "takes its value as written"),
        ("put --sudo --sudo f @h:/x", 12, "--sudo is given twice"),
        ("put --force f @h:/x", 5, "put has no option '--force'"),
        ("put a b @h:/x", 5, "put copies one local path"),
        ("put --sudo @h:/x", 5, "--sudo is an option"),
        # A copy starts its line.
        ("@h ls | put f @h:/x", 9, "a copy starts its line"),
        ("sleep 1s | get @h:/x f", 12, "`command get` runs a command named get"),
        ("put f @h:/x | within 5s | within 6s", 27, "already has a 'within'"),
    ],
)
def test_refusals_point_at_their_place(source: str, column: int, words: str) -> None:
    at(source, 1, column, words)


def test_a_get_from_many_hosts_needs_host_in_its_local_path() -> None:
    at("get @h[1-3]:/var/log/x x.log", 1, 24, "@h[1-3] is 3 hosts, and each would write this one local path")
    at("get @{failed}:/x got/f", 1, 18, "@{failed} may be more than one host")
    at("hosts = @a[1-2]\nget @$hosts:/x f", 2, 16, "put $host in it")
    at("for h in @a[1-2] { get @$h:/x got/$h }", 1, 31, "put $host in it")
    at("host = x\nget @h[1-2]:/x got/$host", 2, 16, "put $host in it")  # a binding named host
    assert copy_of("get @h1:/x x.log").local == text("x.log")  # one host: one file
    assert copy_of("get @{web}:/x x.log", groups={"web": "w1"}).local == text("x.log")
    assert copy_of("get @h[1-2]:/x logs/${host}.log").local == text("logs/", HOST, ".log")


def test_a_secret_cannot_be_in_a_copys_path() -> None:
    at('pw = secret "pw"\nput f @h:/x/$pw', 2, 13, "$pw is a secret: a copy's path cannot use it")
    at('pw = secret "pw"\nu = "a${pw}"\nput $u @h:/x', 3, 5, "$u is a secret")  # made from one
    at("put f @h:/$pw", 1, 11, "$pw is a secret", secrets=frozenset({"pw"}))  # bound on an earlier line
    at(
        'pw = secret "pw"\nif $x == 1 { pw = plain }\nput f @h:/$pw',
        3,
        11,
        "is a secret",
        bindings={"x": "value"},
    )
    assert copy_of('pw = secret "pw"\npw = plain\nput f @h:/$pw').remote == text(
        "/", p.Var("pw", None, "raw")
    )


def test_a_copys_errors_are_errors_not_incomplete_input() -> None:
    from dsh.errors import IncompleteInput

    for source in ("put", "put f", "get @h:/x", "put f @h:"):
        assert not isinstance(error(source), IncompleteInput), source


# -- the timeout ----------------------------------------------------------------------------


def sizes_of(table: dict[str, int]) -> tuple[Callable[[str], int | None], list[str]]:
    asked: list[str] = []

    def sizes(path: str) -> int | None:
        asked.append(path)
        return table.get(path)

    return sizes, asked


def test_the_default_timeout_grows_with_the_size_of_a_put() -> None:
    sizes, asked = sizes_of({"./big": 100 * p.COPY_RATE + 5, "/srv/tree": 3 * p.COPY_RATE - 1})
    copy = copy_of("put ./big @h[1-2]:/x", sizes=sizes)
    assert (copy.size, copy.timeout) == (100 * p.COPY_RATE + 5, 700.0)
    assert isinstance(copy.timeout, float)
    copy = copy_of("put /srv/tree @h:/x", sizes=sizes, limits=Limits(default_timeout=30))
    assert (copy.size, copy.timeout) == (3 * p.COPY_RATE - 1, 32.0)
    assert asked == ["./big", "/srv/tree"]
    copy = copy_of("put ./missing @h:/x", sizes=sizes)  # not known: the default
    assert (copy.size, copy.timeout) == (None, 600.0)


def test_within_sets_the_timeout_and_the_size_is_kept() -> None:
    sizes, _ = sizes_of({"big": 100 * p.COPY_RATE})
    copy = copy_of("put big @h:/x | within 5s", sizes=sizes)
    assert (copy.size, copy.timeout) == (100 * p.COPY_RATE, 5.0)


def test_no_size_for_a_get_nor_a_path_known_only_at_run_time() -> None:
    sizes, asked = sizes_of({"big": 10 * p.COPY_RATE, "got/h1": 10 * p.COPY_RATE})
    for source in ("get @h1:/x big", "put big.$host @h:/x", "d = big\nput $d @h:/x", "put ${r.out} @h:/x"):
        copy = copy_of(source, sizes=sizes, bindings={"r": p.RESULT})
        assert (copy.size, copy.timeout) == (None, 600.0), source
    assert asked == []


def test_a_scripts_arguments_are_known_when_it_is_compiled() -> None:
    sizes, asked = sizes_of({"dist/app.tgz": 8 * p.COPY_RATE})
    copy = copy_of("put $1 @h:/tmp/app.tgz", sizes=sizes, args=("dist/app.tgz",))
    assert (copy.size, copy.timeout) == (8 * p.COPY_RATE, 608.0)
    assert asked == ["dist/app.tgz"]


def test_a_default_over_the_cap_is_refused_at_the_copy() -> None:
    sizes, _ = sizes_of({"huge": 8 * 86400 * p.COPY_RATE})
    at("put huge @h:/x", 1, 1, "over the cap on any single wait", sizes=sizes)
    assert copy_of("put huge @h:/x | within 1d", sizes=sizes).timeout == 86400.0


def test_the_worst_case_counts_a_copy_as_a_command() -> None:
    err = error("put f @h[1-200]:/x | retry 9", limits=Limits(step_budget=1000))
    assert "2000 steps" in err.message
    err = error("put f @h:/x | within 1d | retry 40")
    assert "over the cap" in err.message and "limits.max_line" in err.message
    assert "retry 101" in error("put f @h:/x | retry 101").message


# -- the plan ---------------------------------------------------------------------------------


def test_a_plan_with_a_copy_is_version_3_and_round_trips() -> None:
    plan = compile_text(
        "put --sudo www --owner www:www --mode 0640 f @h[1-2]:~/x.$host | retry 1\nr = get @h1:/x g"
    )
    assert plan.version == 3 == p.version_of(plan.statements)
    assert p.loads(p.dumps(plan)) == plan
    for stmt in plan.statements:
        assert p.load_statement(p.dump_statement(stmt)) == stmt
        assert p.dump_statement(stmt)["version"] == 3
    assert compile_text("@h1 cat f | sudo tee /tmp/x").version == 1


def test_explain_tells_a_copy_in_words() -> None:
    sizes, _ = sizes_of({"./f": 40 << 20})
    plan = compile_text(
        "put --sudo --mode 644 ./f @h[1-3]:/tmp/x.$host | retry 1\n"
        "get @h[1-3]:~/x.log got/$host.log | within 1h",
        sizes=sizes,
    )
    words = explain(plan)
    assert (
        "  stage 1  put ./f to h[1-3]:/tmp/x.$host as root (through sudo), mode 0644 within 10m10s "
        "(SRC 40 MiB when compiled), at most 2 attempts (retry 1, waits 1s)"
    ) in words
    assert "  worst    6 steps (2 per host), 20m31s = 2*(10m10s + 5s) + 1s" in words
    assert "  stage 1  get h[1-3]:~/x.log to got/$host.log within 1h, 1 attempt" in words
    assert "note: a copy's timeout" in words


# -- sizes, as the driver finds them ------------------------------------------------------


def test_local_size_of_a_file_a_tree_and_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "one").write_bytes(b"1" * 10)
    (tree / "a" / "two").write_bytes(b"2" * 20)
    (tree / "a" / "b" / "three").write_bytes(b"3" * 30)
    (tree / "link").symlink_to(tmp_path / "f")  # a link counts as itself, not its target
    (tree / "dirlink").symlink_to(tmp_path)
    assert local_size(str(tmp_path / "f")) == 1000
    assert local_size(str(tree)) == 60
    assert local_size(str(tree), max_entries=5) is None  # 7 entries: too many to count
    assert local_size(str(tree), max_entries=7) == 60
    assert local_size(str(tmp_path / "missing")) is None
    assert local_size("a\x00b") is None
    monkeypatch.chdir(tree)
    assert local_size("a") == 50  # relative: to the working directory
    if os.geteuid() != 0:  # root reads everything
        (tree / "a").chmod(0)
        try:
            assert local_size(str(tree)) is None
        finally:
            (tree / "a").chmod(0o755)


def test_dsh_explain_finds_the_size_of_a_put(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with open(tmp_path / "big", "wb") as f:
        f.truncate(40 << 20)  # sparse: 40 MiB that takes no room
    r = run_dsh(["explain", "put big @h[1-2]:/tmp/big"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "put big to h[1-2]:/tmp/big within 10m10s (SRC 40 MiB when compiled)" in r.stdout
    r = run_dsh(["explain", "get @h[1-2]:/tmp/big big"], cwd=tmp_path)
    assert r.returncode == 2
    assert "each would write this one local path" in r.stderr and "^" in r.stderr


# -- the REPL's colours and completion ---------------------------------------------------


def test_the_repl_colours_put_and_get_as_keywords_and_ends_their_target_at_the_colon() -> None:
    from pygments.token import Keyword, Name, Punctuation, Text

    from dsh.repl.lexer import DshLexer

    toks = [
        (t, v)
        for t, v in DshLexer().get_tokens("put --sudo f @h[1-3]:/tmp/x\n@h1:x put y | get z\nx = get\n")
    ]
    words = [(t, v) for t, v in toks if v.strip()]
    assert words[:6] == [
        (Keyword, "put"),
        (Keyword.Pseudo, "--sudo"),
        (Text, "f"),
        (Name.Namespace, "@h[1-3]"),
        (Punctuation, ":"),
        (Text, "/tmp/x"),
    ]
    assert (Name.Namespace, "@h1:x") in words  # not a copy: the whole word is the target
    assert (Text, "put") in words and (Keyword, "get") in words  # a command, then after a stage `|`
    assert words[-1] == (Text, "get")  # `x = get`: a value


def test_completion_offers_put_and_get_where_a_statement_starts() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from dsh.repl.completion import DshCompleter, Sources

    completer = DshCompleter(Sources(lambda: (), lambda: (), lambda: (), lambda: ()))

    def offered(typed: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(typed, len(typed)), CompleteEvent())]

    assert offered("pu") == ["put"]
    assert "get" in offered("g")
    assert offered("ls | ge") == ["get"]
