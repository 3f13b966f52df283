"""The `dsh>` prompt: prompt-toolkit with dsh's colours, completion, checks and history.

`Repl.read_async(prompt)` reads one whole statement, on the running event loop
(prompt-toolkit's `prompt_async`, on the client's loop, whose tasks go on while
it waits): Enter on text that is not complete yet (an unclosed `{`, a
trailing `|`, an open quote) starts a new line; on complete text it checks
it (a compile with what the session has bound) and, if the check fails,
marks the error where it is and keeps the text for fixing. History is kept
per store under the XDG state directory (its file 0600: typed lines may hold
secrets) and searched with Ctrl-R. Ctrl-\\ detaches (the work goes on),
Ctrl-D on an empty line ends the client, Ctrl-C drops the text being typed.
prompt-toolkit starts no thread for it (its FileHistory loads in the loop;
completion and checks run there too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.document import Document
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.validation import ValidationError, Validator

from dsh import state
from dsh.errors import IncompleteInput, LangError
from dsh.repl.completion import DshCompleter, Sources
from dsh.repl.lexer import DshLexer
from dsh.repl.lines import Detach, Dropped


def history_path(state: Path, store: str) -> Path:
    """One history per store: the sessions of one store share it."""
    if store == "local":
        return state / "history"
    return state / f"history-{hashlib.sha256(store.encode()).hexdigest()[:12]}"


class _PrivateHistory(FileHistory):
    """A history file that is made 0600 (prompt-toolkit's would be made by umask)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        state.make_dirs(path.parent)
        state.private_file(path)

    def store_string(self, string: str) -> None:
        state.private_file(self.path)  # again, if it was removed meanwhile
        super().store_string(string)


class _Check(Validator):
    def __init__(self, compile_: Callable[[str], object]) -> None:
        self.compile = compile_

    def validate(self, document: Document) -> None:
        try:
            self.compile(document.text)
        except IncompleteInput:
            return
        except LangError as exc:
            offset = min(max(exc.span.start, 0), len(document.text))
            raise ValidationError(cursor_position=offset, message=exc.message) from None


class Repl:
    def __init__(
        self,
        *,
        history: Path,
        sources: Sources,
        bound: Callable[[], set[str]],
        compile_: Callable[[str], object],
        toolbar: Callable[[], str],
        color: bool,
    ) -> None:
        self.compile = compile_
        #: In a prompt_async (starting, or waiting for a line).
        self.reading = False
        keys = KeyBindings()

        @keys.add("enter", filter=has_focus(DEFAULT_BUFFER))  # not in a Ctrl-R search
        def _enter(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if self.incomplete(buffer.text):
                buffer.insert_text("\n")
            else:
                buffer.validate_and_handle()

        @keys.add("c-\\")
        def _detach(event: KeyPressEvent) -> None:
            event.app.exit(exception=Detach())

        class BoundLexer(DshLexer):  # the names the session binds, coloured apart
            def __init__(self, **options: object) -> None:
                super().__init__(bound=bound, **options)

        self.session: PromptSession[str] = PromptSession(
            history=_PrivateHistory(history),
            lexer=PygmentsLexer(BoundLexer) if color else None,
            completer=DshCompleter(sources),
            complete_while_typing=False,
            validator=_Check(compile_),
            validate_while_typing=False,
            multiline=True,
            key_bindings=keys,
            bottom_toolbar=toolbar,
            prompt_continuation="... ",
            refresh_interval=0.5,  # the toolbar shows work that runs meanwhile
            enable_history_search=False,
            color_depth=None,
        )

    def incomplete(self, text: str) -> bool:
        try:
            self.compile(text)
        except IncompleteInput:
            return True
        except LangError:
            return False
        return False

    async def read_async(self, prompt: str, default: str = "") -> str | None:
        """The next statement (several lines if it spans them); None at Ctrl-D;
        Dropped at Ctrl-C, Detach at Ctrl-\\."""
        self.reading = True
        try:
            # No exception handler of prompt-toolkit's: it would wait for Enter.
            return await self.session.prompt_async(prompt, set_exception_handler=False, default=default)
        except EOFError:
            return None
        except KeyboardInterrupt:  # raised in the loop's task, it would stop the loop
            raise Dropped from None
        finally:
            self.reading = False
