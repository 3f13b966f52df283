"""The sh scanner: here-documents, case, comments, escapes, nesting and `$` contexts."""

from __future__ import annotations

import pytest

from dsh import plan as p
from dsh.errors import IncompleteInput, LangError
from dsh.lang.compiler import Context, compile_source
from dsh.lang.lexer import Kind, tokenize
from dsh.lang.source import Source
from dsh.lang.tokens import Ref


def commands(text: str) -> list[str]:
    return [t.text for t in tokenize(Source("t", text)) if t.kind is Kind.COMMAND]


def contexts(text: str) -> list[tuple[str, str]]:
    (tok, *_rest) = [t for t in tokenize(Source("t", text)) if t.kind is Kind.COMMAND]
    return [(r.name, r.context) for r in tok.parts if isinstance(r, Ref)]


def test_here_document_is_part_of_its_command() -> None:
    assert commands("cat <<EOF\nhello | within 5s\nEOF\necho next") == [
        "cat <<EOF\nhello | within 5s\nEOF",
        "echo next",
    ]
    assert commands("cat <<-'END' | grep x\n\tbody $x\n\tEND") == ["cat <<-'END' | grep x\n\tbody $x\n\tEND"]


def test_here_document_references_and_quoted_delimiters() -> None:
    assert contexts("cat <<EOF\n$a ${b} \\$c\nEOF") == [("a", "heredoc"), ("b", "heredoc")]
    assert contexts("cat <<'EOF'\n$a\nEOF") == []
    assert contexts('cat <<"E"F\n$a\nEF') == []


def test_unfinished_here_document_is_incomplete() -> None:
    with pytest.raises(IncompleteInput, match="delimiter 'EOF'"):
        tokenize(Source("t", "cat <<EOF\nhello\n"))
    with pytest.raises(LangError, match="delimiter word"):
        tokenize(Source("t", "cat << ;"))


def test_case_patterns_do_not_close_a_substitution() -> None:
    text = "echo $(case b in\n a) echo one;;\n b) echo two;;\nesac) | within 2s"
    assert commands(text) == [text.split(" | within")[0]]


def test_comments_inside_substitutions() -> None:
    assert commands("echo $(echo hi # it's\n) | within 1s") == ["echo $(echo hi # it's\n)"]
    assert commands("echo $(echo a)#b") == ["echo $(echo a)#b"]


def test_escaped_blanks_are_kept() -> None:
    assert commands("printf '[%s]' a\\ ") == ["printf '[%s]' a\\ "]
    assert commands("echo a\\ #b") == ["echo a\\ #b"]


def test_pipe_at_line_end_then_keyword_is_a_stage() -> None:
    (run,) = compile_source(Source("t", "echo a |\n  within 5s"), Context()).statements
    assert isinstance(run, p.Run)
    (cmd,) = run.pipeline.stages
    assert isinstance(cmd, p.Command) and cmd.timeout == 5 and cmd.written == "echo a"


def test_brace_group_after_a_target_is_a_command() -> None:
    toks = tokenize(Source("t", "@h1 { cd /tmp && ls; } 2>&1"))
    assert [(t.kind, t.text) for t in toks][:2] == [
        (Kind.TARGET, "@h1"),
        (Kind.COMMAND, "{ cd /tmp && ls; } 2>&1"),
    ]


def test_keyword_with_equals_is_an_environment_prefix() -> None:
    assert commands("retry=3 env") == ["retry=3 env"]


def test_reference_contexts() -> None:
    assert contexts('echo $a "$b" "${c:-$d}" ${e:-$f} $(( $g + 1 )) "$(echo $h)" `echo $i`') == [
        ("a", "shell"),
        ("b", "dquote"),
        ("d", "dquote"),
        ("f", "shell"),
        ("g", "dquote"),
        ("h", "shell"),
        ("i", "backquote"),
    ]


def test_bound_names_in_backquotes_or_with_operators_are_refused() -> None:
    with pytest.raises(LangError, match="backquotes"):
        compile_source(Source("t", "x = 1\necho `echo $x`"), Context())
    with pytest.raises(LangError, match="the shell's 'x'"):
        compile_source(Source("t", "x = 1\necho ${x:-d}"), Context())
    compile_source(Source("t", "echo `echo $HOME` ${HOME:-/}"), Context())


def test_nul_bytes_and_deep_nesting_are_positioned_errors() -> None:
    with pytest.raises(LangError, match="NUL") as info:
        tokenize(Source("t", "echo a\x00b"))
    assert info.value.span.column == 7
    with pytest.raises(LangError, match="nested more than"):
        tokenize(Source("t", "echo " + "$(" * 500))


def test_absurd_durations_are_refused() -> None:
    with pytest.raises(LangError, match="too long"):
        compile_source(Source("t", "sleep " + "9" * 400 + "s"), Context())
