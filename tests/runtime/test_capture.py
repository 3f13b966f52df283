"""A flow's Capture masks the secrets bound now, also across the pieces output comes in."""

from __future__ import annotations

from dsh.runtime.capture import Capture


def test_a_secret_split_between_pieces_is_masked_in_what_is_shown_and_kept() -> None:
    shown: list[tuple[str, bytes]] = []
    capture = Capture(lambda stream, data: shown.append((stream, data)), lambda: (b"hunter2",))
    capture("stdout", b"pw is hun")
    capture("stderr", b"hunter2!")
    capture("stdout", b"ter2, again hunter2\n")
    capture.end()
    assert b"".join(d for s, d in shown if s == "stdout") == b"pw is ***, again ***\n"
    assert b"".join(d for s, d in shown if s == "stderr") == b"***!"
    assert bytes(capture.out) == b"pw is ***, again ***\n" and bytes(capture.err) == b"***!"


def test_what_only_looked_like_a_secret_is_passed_on_at_the_end() -> None:
    shown: list[bytes] = []
    capture = Capture(lambda stream, data: shown.append(data), lambda: (b"hunter2",))
    capture("stdout", b"a hunt")
    assert b"".join(shown) == b"a "  # "hunt" may begin the secret: held back
    capture.end()
    assert b"".join(shown) == b"a hunt"


def test_without_secrets_every_piece_passes_as_it_is() -> None:
    shown: list[bytes] = []
    capture = Capture(lambda stream, data: shown.append(data))
    capture("stdout", b"")
    capture("stdout", b"x")
    assert shown == [b"", b"x"]
