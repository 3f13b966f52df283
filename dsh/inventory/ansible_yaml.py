"""Ansible's YAML inventory format (JSON too: it is YAML), read as ansible-core's
`yaml` plugin reads it, into an ansible.Builder; PyYAML is imported here only,
when a file is read, and only its safe loader is used.

The file is a mapping of groups (`all:` and any other), each a mapping of
`hosts:` (host pattern: its variables, or nothing), `children:` (group: the
same again) and `vars:`. A string where a mapping is expected is a one-key
mapping, as in Ansible; any other key of a group is skipped with a warning.
Every key keeps its line, so messages say `FILE:LINE:`. `!vault` values are
not decrypted (a warning where dsh would use one); `!unsafe` text is not a
template.
"""

from __future__ import annotations

from typing import Any

from dsh.inventory.ansible import MAX_NAMES, AnsibleInventory, Builder, not_utf8
from dsh.inventory.ansible_vars import Unread, Verbatim

_SECTIONS = ("hosts", "children", "vars")


class _Map(dict[Any, Any]):
    """A YAML mapping, with the line of each of its keys."""

    lines: dict[Any, int]


def read(builder: Builder, text: str) -> AnsibleInventory:
    """The inventory the YAML `text` holds; InventoryError `FILE:LINE: …` for what
    cannot be read."""
    b = builder
    bad = not_utf8(text)
    if bad is not None:
        b.fail(b.at(text.count("\n", 0, bad) + 1), "not UTF-8 text (an inventory is UTF-8)")
    data, duplicates = _parse(b, text)
    for number, key in duplicates:
        b.warn(b.at(number), f"{key!r} is given twice in one mapping: the last one counts, as in Ansible")
    if not data:
        b.fail(b.path, "empty: a YAML inventory is a mapping of groups, like `all: {hosts: {web1: }}`")
    if not isinstance(data, _Map):
        b.fail(b.at(1), f"a YAML inventory is a mapping of groups (all:, GROUP:), not {_kind(data)}")
    if data.get("plugin"):
        b.fail(
            b.at(data.lines["plugin"]),
            "this configures an Ansible inventory plugin, which dsh cannot run; give dsh its"
            " output: ansible-inventory -i FILE --list --yaml > inventory.yml",
        )
    walk = _Walk(b)
    for name, value in data.items():
        walk.group(name, value, b.at(data.lines[name]), top=True)
    return b.finish()


def _parse(b: Builder, text: str) -> tuple[object, list[tuple[int, object]]]:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.duplicates: list[tuple[int, object]] = []

    def mapping(loader: Any, node: Any) -> Any:
        data = _Map()
        data.lines = {}
        yield data
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "expected a mapping", node.start_mark)
        own: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                if ident in own:
                    loader.duplicates.append((key_node.start_mark.line + 1, key_node.value))
                own.add(ident)
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, "a key is not text", key_node.start_mark
                ) from None
            data.lines[key] = key_node.start_mark.line + 1
            data[key] = loader.construct_object(value_node)

    def vault(loader: Any, node: Any) -> Unread:
        loader.construct_scalar(node)
        return Unread("encrypted with Ansible Vault, which dsh does not decrypt")

    def unsafe(loader: Any, node: Any) -> Verbatim:
        return Verbatim(loader.construct_scalar(node))

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    Loader.add_constructor("!vault", vault)
    Loader.add_constructor("!unsafe", unsafe)
    loader = Loader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = b.at(mark.line + 1) if mark is not None else b.path
        b.fail(where, f"not valid YAML: {exc.problem or exc.context}")
    except yaml.reader.ReaderError as exc:
        b.fail(b.at(text.count("\n", 0, exc.position) + 1), f"not valid YAML: character {exc.character!r}")
    except yaml.YAMLError as exc:
        b.fail(b.path, f"not valid YAML: {exc}")
    except RecursionError:
        b.fail(b.path, "not valid YAML: nested too deeply")
    finally:
        loader.dispose()


class _Walk:
    """The groups of a YAML inventory into a Builder, each mapping read once for each
    group it is given to, and at most MAX_NAMES entries read in all (aliases can
    give a mapping to a great many groups)."""

    def __init__(self, builder: Builder) -> None:
        self.b = builder
        self.seen: set[tuple[str, int]] = set()
        self.entries = 0

    def group(self, name: object, data: object, where: str, top: bool) -> str:
        b = self.b
        if data is not None and not isinstance(data, _Map):
            what = f"a group is a mapping (hosts:, children:, vars:), not {_kind(data)}"
            if top:  # as Ansible: skipped
                b.warn(where, f"{name!r} is skipped: {what}")
                return ""
            b.fail(where, f"group {name!r}: {what}")
        group = b.group(name, where)
        if data is None or (group, id(data)) in self.seen:
            return group
        self.seen.add((group, id(data)))
        for key, value in data.items():
            at = b.at(data.lines[key])
            if key not in _SECTIONS:
                b.warn(at, f"group {group!r}: {key!r} is skipped: a group has hosts:, children: and vars:")
                continue
            if isinstance(value, str):
                value, line = _Map({value: None}), data.lines[key]
                value.lines = dict.fromkeys(value, line)
            if value is None:
                continue
            if not isinstance(value, _Map):
                hint = " (a host is a key: `web1:` on a line of its own)" if isinstance(value, list) else ""
                b.fail(at, f"group {group!r}: {key} is a mapping, not {_kind(value)}{hint}")
            self.spend(len(value), at)
            if key == "vars":
                b.add_group_vars(group, b.variables((k, v, b.at(value.lines[k])) for k, v in value.items()))
            elif key == "children":
                for child, child_data in value.items():
                    child_at = b.at(value.lines[child])
                    b.child(group, self.group(child, child_data, child_at, top=False), child_at)
            else:
                for pattern, own in value.items():
                    host_at = b.at(value.lines[pattern])
                    if own is not None and not isinstance(own, _Map):
                        b.fail(
                            host_at,
                            f"host {pattern!r}: its variables are a mapping, not {_kind(own)}",
                        )
                    items = [] if own is None else [(k, v, b.at(own.lines[k])) for k, v in own.items()]
                    b.add_hosts(group, pattern, host_at, b.variables(items))
        return group

    def spend(self, entries: int, where: str) -> None:
        self.entries += entries
        if self.entries > MAX_NAMES:
            self.b.fail(where, f"the inventory's mappings hold over {MAX_NAMES} entries in all (aliases?)")


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"
