"""Copies, `put` and `get`: their words after the keyword, and the rules of their paths.

`put [--sudo [USER]] [--owner U[:G]] [--mode M] PATH TARGET:RPATH` copies PATH
on this machine to RPATH on each host of TARGET; `get TARGET:RPATH PATH` copies
each host's RPATH to PATH here. PATH is always the last word before the target,
so `--sudo` takes a user only when another word follows it before PATH.

A path is one word or one string that no shell reads (the copy goes over SFTP):
only the `$` names dsh binds expand in it, any other `$` is refused where it
stands, and a `~/` that starts an unquoted remote path is the login user's home
(compiled to the relative path after it, which SFTP reads under the home).
"""

from __future__ import annotations

import re

from dsh.errors import LangError
from dsh.lang import ast
from dsh.lang.shtext import escaped
from dsh.lang.source import Span
from dsh.lang.tokens import Kind, Lit, Part, Ref, Token
from dsh.plan import GET, PUT

PUT_FORM = "put [--sudo [USER]] [--owner U[:G]] [--mode M] PATH @HOSTS:RPATH"
GET_FORM = "get @HOSTS:RPATH PATH"
OPTIONS = ("--sudo", "--owner", "--mode")
#: A user or group name as POSIX systems take them, or a numeric id.
_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}")
_OCTAL = re.compile(r"[0-7]{1,6}")
#: The most a mode holds: the permission bits with setuid, setgid and sticky.
MAX_MODE = 0o7777
_PATH_WORDS = (Kind.WORD, Kind.STRING)


def read_copy(toks: list[Token], i: int) -> tuple[ast.CopyStage, ast.Target, int]:
    """The copy whose keyword is `toks[i]`: its stage, its target, and the index of
    the token after it. Raises LangError at the word that is wrong."""
    kw = toks[i]
    put = kw.text == PUT
    form = PUT_FORM if put else GET_FORM
    i += 1
    words: list[Token] = []
    while toks[i].kind in _PATH_WORDS:
        words.append(toks[i])
        i += 1
    for word in words:
        _whole(word)
    target = toks[i]
    if target.kind is not Kind.TARGET:
        at = target if target.kind not in (Kind.NEWLINE, Kind.EOF) else (words or [kw])[-1]
        raise LangError(f"'{kw.text}' needs hosts and a remote path, as in @h1:/tmp/f: {form}", at.span)
    sudo = owner = None
    mode: int | None = None
    if put:
        if not words:
            raise LangError(f"put needs the local path to copy, before the hosts: {form}", target.span)
        local = words[-1]
        if local.kind is Kind.WORD and local.text.partition("=")[0] in OPTIONS:
            raise LangError(
                f"{local.text} is an option; the local path is the last word before the hosts: {form}",
                local.span,
            )
        sudo, owner, mode = _options(words[:-1])
    elif words:
        raise LangError(f"get takes the hosts first: {form}", words[0].span)
    i += 1
    colon = toks[i]
    if colon.kind is not Kind.COLON:
        raise LangError(
            f"the hosts of a copy are followed by ':' and the remote path, as in {target.text}:/tmp/f",
            target.span,
        )
    i += 1
    remote = toks[i]
    if remote.kind not in _PATH_WORDS or remote.span.start != colon.span.end:
        raise LangError(
            "the remote path is missing: it follows the ':' with no blank, as in @h1:/tmp/f", colon.span
        )
    i += 1
    last = remote
    if not put:
        local = toks[i]
        if local.kind not in _PATH_WORDS:
            at = local if local.kind not in (Kind.NEWLINE, Kind.EOF) else remote
            raise LangError(f"get needs the local path to write, after the remote one: {form}", at.span)
        i += 1
        last = local
    _whole(remote)
    if not put:
        _whole(local)
    extra = toks[i]
    if extra.kind in (*_PATH_WORDS, Kind.TARGET, Kind.COLON):
        raise LangError(
            f"unexpected {extra.describe()}: a copy has one target and two paths, each one word "
            f"or one quoted string ({form})",
            extra.span,
        )
    stage = ast.CopyStage(
        PUT if put else GET,
        ast.Value(local.parts, local.span),
        ast.Value(remote.parts, remote.span),
        kw.span.to(last.span),
        sudo,
        owner,
        mode,
    )
    return stage, ast.Target(target.parts, target.span), i


def _whole(path: Token) -> None:
    """A path is one word or one string: `/a'b c'` or `/a#b` would be cut short."""
    text, end = path.span.source.text, path.span.end
    after = text[end : end + 1]
    if after in ("", " ", "\t", "\r", "\n", "|", "}", "\\"):
        return
    if after == "#":
        what = "a '#' after a blank starts a comment; here it would cut the path short"
    else:
        what = "a path (or an option) is one word or one quoted string"
    example = f", as in '/tmp/a{after}b'" if after in "#{" else ""
    raise LangError(f"{what}: quote the whole of it{example}", Span(path.span.source, end, end + 1))


def _options(words: list[Token]) -> tuple[str | None, str | None, int | None]:
    """`--sudo [USER]`, `--owner U[:G]`, `--mode M` (also `--owner=U`), in any order."""
    found: dict[str, str] = {}
    j = 0
    while j < len(words):
        tok = words[j]
        name, eq, _ = tok.text.partition("=")
        if tok.kind is not Kind.WORD or name not in OPTIONS:
            if tok.kind is Kind.WORD and tok.text.startswith("-"):
                raise LangError(
                    f"put has no option {name!r} (its options: --sudo [USER], --owner U[:G], --mode M)",
                    tok.span,
                )
            raise LangError(
                f"unexpected {tok.describe()}: put copies one local path, the last word before the "
                f"hosts ({PUT_FORM})",
                tok.span,
            )
        if name in found:
            raise LangError(f"{name} is given twice", tok.span)
        j += 1
        if eq:
            start = tok.span.start + len(name) + 1
            value = _literal(name, tok, Span(tok.span.source, start, tok.span.end))
            span = Span(tok.span.source, start, tok.span.end)
        elif name == "--sudo" and (j >= len(words) or words[j].text.partition("=")[0] in OPTIONS):
            found[name] = "root"
            continue
        elif j >= len(words):
            what = "the owner, as in --owner www:www" if name == "--owner" else "the mode, as in --mode 0644"
            raise LangError(
                f"{name} needs {what}; the local path is the last word before the hosts", tok.span
            )
        else:
            value, span = _literal(name, words[j], words[j].span), words[j].span
            j += 1
        found[name] = _checked(name, value, span)
    mode = found.get("--mode")
    return found.get("--sudo"), found.get("--owner"), None if mode is None else int(mode, 8)


def _literal(name: str, tok: Token, span: Span) -> str:
    refs = [p for p in tok.parts if isinstance(p, Ref) and p.span.start >= span.start]
    if refs:
        raise LangError(f"{name} takes its value as written: dsh's $ names are not read there", refs[0].span)
    text = "".join(p.text for p in tok.parts if isinstance(p, Lit))
    return text[len(name) + 1 :] if span.start > tok.span.start else text


def _checked(name: str, value: str, span: Span) -> str:
    if name == "--mode":
        if not _OCTAL.fullmatch(value) or int(value, 8) > MAX_MODE:
            raise LangError(f"{value!r} is not a mode: octal digits up to 7777, like 0644 or 755", span)
        return value
    names = value.split(":", 1) if name == "--owner" else [value]
    for index, part in enumerate(names):
        if not _NAME.fullmatch(part) or part in (".", ".."):
            what = "group" if index else "user"
            raise LangError(
                f"{part!r} is not a {what} name (up to 32 letters, digits, '_', '-' or '.', "
                "not starting with '-'; or a numeric id)",
                span,
            )
    return value


def path_parts(value: ast.Value, *, remote: bool, what: str = "a copy's path") -> tuple[Part, ...]:
    """A path's parts (`what`: a copy's, stdin's), checked: no `$` but the names dsh
    may bind (the compiler checks those), not empty; on an unquoted remote path `~/`
    taken off (the rest is under the home), and no `~user`; no `~` on an unquoted
    local one."""
    how = "SFTP" if remote else "dsh reads it"
    raw = value.span.text
    source, start = value.span.source, value.span.start
    refs = {part.span.start for part in value.parts if isinstance(part, Ref)}
    if not raw.startswith("'"):
        quoted = raw.startswith('"')
        for k, ch in enumerate(raw):
            if ch == "$" and start + k not in refs and not (quoted and escaped(raw, k)):
                bad = raw[k : k + 2].rstrip('"')
                raise LangError(
                    f"{bad} is not a name dsh binds: {what} is not read by a shell ({how}); "
                    "write the path, or quote it in '…' for a literal $",
                    Span(source, start + k, start + k + len(bad)),
                )
    parts = value.parts
    first = parts[0].text if parts and isinstance(parts[0], Lit) else ""
    if first.startswith("~") and raw[0] not in "'\"":
        head = raw.split("/", 1)[0]
        at = Span(source, start, start + len(head))
        if head != "~":  # `~www/x`, `~$user/x`
            raise LangError(
                f"{head} is not expanded: {what} is not read by a shell; write the path "
                + (
                    "(a relative remote path is under the login user's home)"
                    if remote
                    else "(a relative one is under the working directory)"
                ),
                at,
            )
        if not remote:
            raise LangError(
                f"~ is not expanded in {what} on this machine: no shell reads it; write the path "
                "(a relative one is under the working directory)",
                at,
            )
        rest = first[1:].lstrip("/")
        parts = ((Lit(rest),) if rest else ()) + parts[1:]
        if not parts:
            raise LangError("the home directory is not a file to copy to: name one, as in ~/f", value.span)
    if not parts or all(isinstance(p, Lit) and not p.text for p in parts):
        raise LangError(f"{what} cannot be empty", value.span)
    return parts
