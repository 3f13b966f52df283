"""`@record` behaves as `dataclass(frozen=True, slots=True)` does, for what dsh uses."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from dsh.record import record


@record
class Point:
    """A point."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()

    def moved(self, dx: int) -> Point:
        return dataclasses.replace(self, x=self.x + dx)


@dataclasses.dataclass(frozen=True, slots=True)
class Twin:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


@record
class Empty:
    pass


def test_a_record_is_made_equal_compared_and_hashed_like_a_frozen_dataclass() -> None:
    p = Point(1, tags=("a",))
    t = Twin(1, tags=("a",))
    assert (p.x, p.y, p.tags) == (t.x, t.y, t.tags)
    assert repr(p) == repr(t).replace("Twin", "Point")
    assert p == Point(1, 0, ("a",)) and p != Point(2) and p != t
    assert hash(p) == hash(Point(1, 0, ("a",)))
    assert len({p, Point(1, 0, ("a",)), Point(2)}) == 2
    assert Empty() == Empty() and repr(Empty()) == "Empty()"
    assert Point.__doc__ == "A point." and Point.__init__.__qualname__ == "Point.__init__"
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_a_record_is_frozen_and_slotted() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x  # type: ignore[misc]
    assert not hasattr(p, "__dict__") and Point.__slots__ == ("x", "y", "tags")


def test_a_record_is_a_dataclass_to_fields_replace_match_pickle_and_copy() -> None:
    p = Point(1, 2)
    assert dataclasses.is_dataclass(p)
    assert [(f.name, f.default) for f in dataclasses.fields(p)] == [
        ("x", dataclasses.MISSING),
        ("y", 0),
        ("tags", ()),
    ]
    assert p.moved(3) == Point(4, 2)
    match p:
        case Point(x, y):
            assert (x, y) == (1, 2)
        case _:
            pytest.fail("a record matches its positional pattern")
    assert pickle.loads(pickle.dumps(p)) == p
    assert copy.deepcopy(p) == p and copy.copy(p) == p


def test_what_a_record_does_not_support_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match="only plain immutable defaults"):

        @record
        class WithFactory:
            items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="__post_init__"):

        @record
        class WithPostInit:
            x: int

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError, match="without a default follows"):

        @record
        class Order:
            x: int = 0
            y: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="defines __repr__"):

        @record
        class OwnRepr:
            x: int

            def __repr__(self) -> str:
                return "mine"

    with pytest.raises(TypeError, match="a base with fields"):

        @record
        class Child(Point):
            z: int = 0
