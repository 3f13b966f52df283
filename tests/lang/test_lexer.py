"""The modal lexer: where command stages end, and which `$` it records."""

from __future__ import annotations

import pytest

from dsh.errors import IncompleteInput, LangError
from dsh.lang.lexer import Kind, Lit, Ref, tokenize
from dsh.lang.source import Source


def kinds(text: str) -> list[tuple[str, str]]:
    return [(t.kind.name, t.text) for t in tokenize(Source("t", text)) if t.kind is not Kind.EOF]


def test_remote_pipe_stays_inside_one_command() -> None:
    assert kinds("@web1 journalctl -u nginx | grep -c error") == [
        ("TARGET", "@web1"),
        ("COMMAND", "journalctl -u nginx | grep -c error"),
    ]


def test_pipe_before_a_keyword_ends_the_stage() -> None:
    assert kinds("@web[1-4] systemctl restart nginx | within 30s | retry 2") == [
        ("TARGET", "@web[1-4]"),
        ("COMMAND", "systemctl restart nginx"),
        ("PIPE", "|"),
        ("KEYWORD", "within"),
        ("WORD", "30s"),
        ("PIPE", "|"),
        ("KEYWORD", "retry"),
        ("WORD", "2"),
    ]


def test_first_word_after_a_target_is_always_a_command() -> None:
    assert kinds("@h1 sleep 30") == [("TARGET", "@h1"), ("COMMAND", "sleep 30")]


def test_keyword_only_at_statement_start() -> None:
    assert kinds("sleep 2s") == [("KEYWORD", "sleep"), ("WORD", "2s")]
    assert kinds("echo sleep within") == [("COMMAND", "echo sleep within")]
    assert kinds("command sleep 30") == [("COMMAND", "command sleep 30")]


@pytest.mark.parametrize(
    "text",
    [
        "echo 'a | within 5s'",
        'echo "a | within 5s"',
        "echo $(echo a | within 5s)",
        "echo `echo a | within`",
        "echo a \\| within 5s",
        "echo a || within",
    ],
)
def test_quoted_or_nested_pipes_do_not_end_the_stage(text: str) -> None:
    assert kinds(text) == [("COMMAND", text)]


def test_shell_operators_go_to_the_shell() -> None:
    text = "cd /tmp && ls > out; cat <out >> log 2>&1 &"
    assert kinds(text) == [("COMMAND", text)]


def test_comment_ends_a_command_but_not_inside_words() -> None:
    assert kinds("echo a#b # note") == [("COMMAND", "echo a#b")]
    assert kinds("# only a comment\necho x") == [("NEWLINE", "\n"), ("COMMAND", "echo x")]


def test_newline_ends_a_statement_and_trailing_pipe_continues() -> None:
    assert kinds("echo a |\n  grep a\necho b") == [
        ("COMMAND", "echo a |\n  grep a"),
        ("NEWLINE", "\n"),
        ("COMMAND", "echo b"),
    ]


@pytest.mark.parametrize(
    "text", ["echo 'open", 'echo "open', "echo $(open", "echo a |", "true &&", "echo `x", "echo a \\"]
)
def test_unfinished_input_is_incomplete(text: str) -> None:
    with pytest.raises(IncompleteInput):
        tokenize(Source("t", text))


def test_references_record_quoting_and_fields() -> None:
    (tok, _eof) = tokenize(Source("t", "echo $x \"${ver.out}\" '$y' \\$z ${HOME:-/} $1"))
    refs = [p for p in tok.parts if isinstance(p, Ref)]
    assert [(r.name, r.field, r.context) for r in refs] == [
        ("x", None, "shell"),
        ("ver", "out", "dquote"),
        ("1", None, "shell"),
    ]
    assert "".join(p.text if isinstance(p, Lit) else p.raw for p in tok.parts) == tok.text


def test_binding_forms() -> None:
    assert kinds("x = 5")[:2] == [("WORD", "x"), ("ASSIGN", "=")]
    assert kinds("x=5")[:2] == [("WORD", "x"), ("ASSIGN", "=")]
    assert kinds("FOO=bar make") == [("COMMAND", "FOO=bar make")]
    assert kinds("hosts = @web[1-4]") == [("WORD", "hosts"), ("ASSIGN", "="), ("TARGET", "@web[1-4]")]
    assert kinds("test a == b") == [("COMMAND", "test a == b")]


def test_targets_with_set_operations_and_references() -> None:
    assert kinds("@web[1-10]!web3,db1 uname") == [("TARGET", "@web[1-10]!web3,db1"), ("COMMAND", "uname")]
    (tok, *_rest) = tokenize(Source("t", "@{failed}&$hosts true"))
    assert [type(p).__name__ for p in tok.parts] == ["Ref", "Lit", "Ref"]


def test_unclosed_bracket_points_at_the_bracket() -> None:
    with pytest.raises(LangError) as info:
        tokenize(Source("t", "@h[1-3 true"))
    assert (info.value.span.line, info.value.span.column) == (1, 3)


def test_brace_group_of_sh_stays_in_the_command() -> None:
    text = "{ echo a; echo b; } | within 5s"
    assert kinds(text)[0] == ("COMMAND", "{ echo a; echo b; }")


def test_spans_cover_the_token_text() -> None:
    src = Source("t", "x = 1\n@h[1-2] echo $x | within 2s\n")
    for tok in tokenize(src):
        assert src.text[tok.span.start : tok.span.end] == tok.text
