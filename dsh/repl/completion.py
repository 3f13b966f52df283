"""Tab completion at the `dsh>` prompt: what a word can be where the cursor is.

At a statement's start (or after a stage `|`): keywords and functions. After
`@`: host aliases of the ssh config and inventory groups, with `@{…}` for
groups and result sets; inside `@h[…`, the folded node set of the aliases
that start with `h`. After `$` or `${`: the names dsh binds (and a result's
fields after `.`). After `within`, `sleep`, `every` or `backoff`: durations.
Elsewhere: file paths, for local commands.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from dsh import nodeset
from dsh.plan import RESULT_FIELDS, RESULT_SETS
from dsh.repl.lexer import KEYWORDS

DURATIONS = ("5s", "10s", "30s", "1m", "5m", "10m", "30m", "1h", "1d")
_AFTER_DURATION = ("within", "sleep", "every", "backoff")
_WORD_START = re.compile(r"[^\s|{}]*$")
#: A group being typed in a target: `@{we`, `@web1,{db` (its `{` is part of the word).
_GROUP_START = re.compile(r"@[^\s|{}]*\{[^\s|{}]*$")
_NUMBERED = re.compile(r"(.*?)(\d+)$")


@dataclass
class Sources:
    """What completion draws from; each is called when a completion is asked for."""

    hosts: Callable[[], Iterable[str]]
    groups: Callable[[], Iterable[str]]
    bindings: Callable[[], Iterable[str]]
    functions: Callable[[], Iterable[str]]


class DshCompleter(Completer):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        match = _GROUP_START.search(before) or _WORD_START.search(before)
        word = match.group() if match else ""
        start = -len(word)
        if word.startswith("@"):
            yield from self._targets(word, start)
            return
        dollar = word.rfind("$")
        if dollar >= 0:
            yield from self._names(word[dollar:], -len(word) + dollar)
            return
        previous = before[: len(before) - len(word)].rstrip().rsplit(None, 1)
        last = previous[-1] if previous else ""
        if last in _AFTER_DURATION:
            yield from (Completion(d, start) for d in DURATIONS if d.startswith(word))
            return
        rest = before[: len(before) - len(word)]
        at_head = not rest.strip() or rest.rstrip().endswith(("|", "{", "}"))
        if at_head:
            words = sorted({*KEYWORDS, *self.sources.functions()})
            yield from (Completion(w, start) for w in words if w.startswith(word))
            return
        yield from self.paths.get_completions(Document(word, len(word)), complete_event)

    def _targets(self, word: str, start: int) -> Iterator[Completion]:
        if "{" in word and "}" not in word:
            typed = word[word.index("{") + 1 :]
            names = sorted({*self.sources.groups(), *RESULT_SETS})
            for name in names:
                if name.startswith(typed):
                    yield Completion(word[: word.index("{") + 1] + name + "}", start, display=f"@{{{name}}}")
            return
        hosts = sorted(set(self.sources.hosts()))
        if "[" in word and "]" not in word:
            prefix = word[1 : word.index("[")]
            members = [h for h in hosts if (m := _NUMBERED.match(h)) and m.group(1) == prefix]
            if members:
                folded = nodeset.fold(members)
                yield Completion("@" + folded, start, display=folded, display_meta=f"{len(members)} hosts")
                for host in members:
                    yield Completion("@" + host, start, display=host)
            return
        typed = word[1:]
        for host in hosts:
            if host.startswith(typed):
                yield Completion("@" + host, start, display=host)
        for group in sorted(self.sources.groups()):
            if group.startswith(typed.lstrip("{")):
                yield Completion("@{" + group + "}", start, display=f"@{{{group}}}", display_meta="group")

    def _names(self, word: str, start: int) -> Iterator[Completion]:
        braced = word.startswith("${")
        typed = word[2:] if braced else word[1:]
        names = sorted({*self.sources.bindings(), "host"})
        if braced and "." in typed:
            name, _, field = typed.partition(".")
            for f in RESULT_FIELDS:
                if f.startswith(field):
                    yield Completion(f"${{{name}.{f}}}", start)
            return
        for name in names:
            if name.startswith(typed):
                yield Completion(f"${{{name}}}" if braced else f"${name}", start)
