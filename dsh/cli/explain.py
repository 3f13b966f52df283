"""`dsh explain TEXT|SCRIPT`: the compiled plan told in words (or as JSON), with
its worst case; nothing runs."""

from __future__ import annotations

from pathlib import Path

from dsh.cli.args import read_script
from dsh.cli.wiring import Wiring
from dsh.errors import UsageError
from dsh.exits import Exit


def explain(wiring: Wiring, rest: list[str]) -> int:
    """`dsh explain TEXT|SCRIPT [ARGS…]`: a file's text when TEXT names a file."""
    from dsh.explain import explain as in_words

    if not rest:
        raise UsageError("explain needs a line or a script: dsh explain '@web[1-4] uptime'")
    what, args = rest[0], tuple(rest[1:])
    script_args: tuple[str, ...] | None = args or None
    try:
        is_file = Path(what).is_file()
    except OSError:  # e.g. a line too long to be a file name
        is_file = False
    if is_file:
        text, name, script_args = read_script(what), what, args
    else:
        text, name = what, "<explain>"
    driver = wiring.driver(script_args, stateful=False)
    driver.explaining = True  # `stdin -` is told, as where the text runs in the foreground
    plan = driver.compile(text, name)
    if wiring.settings.json:
        from dsh.plan import dumps

        print(dumps(plan))
    else:
        print(in_words(plan))
    return Exit.OK
