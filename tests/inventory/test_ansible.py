"""Ansible inventories (dsh.inventory.ansible): INI and YAML files in tmp_path, read
as Ansible reads them, every refusal a sentence with its file and line."""

from __future__ import annotations

import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsh import nodeset
from dsh.inventory import ansible
from dsh.inventory.base import HostVars, InventoryError

RESULT_SETS = ("failed", "lost", "ok")

INI = """\
# hosts before any section are ungrouped
solo ansible_host=10.0.0.9 ansible_user='root'

[web]
web[01:03] ansible_user=deploy
web10:2222 ansible_host="10.0.0.10"  # a comment

[db]
db-[a:c]

[prod:children]
web
db

[prod:vars]
ansible_user=produser
ansible_port=2200

[all:vars]
ansible_ssh_private_key_file=keys/id_prod
"""

YAML = """\
all:
  hosts:
    solo:
      ansible_host: 10.0.0.9
      ansible_user: root
  vars:
    ansible_ssh_private_key_file: keys/id_prod
  children:
    prod:
      vars:
        ansible_user: produser
        ansible_port: 2200
      children:
        web:
          hosts:
            web[01:03]:
              ansible_user: deploy
            web10:2222:
              ansible_host: "10.0.0.10"
        db:
          hosts:
            db-[a:c]:
"""

JSON = """{"all": {"hosts": {"solo": {"ansible_host": "10.0.0.9", "ansible_user": "root"}},
 "vars": {"ansible_ssh_private_key_file": "keys/id_prod"},
 "children": {"prod": {"vars": {"ansible_user": "produser", "ansible_port": 2200},
   "children": {"web": {"hosts": {"web[01:03]": {"ansible_user": "deploy"},
                                  "web10:2222": {"ansible_host": "10.0.0.10"}}},
                "db": {"hosts": {"db-[a:c]": null}}}}}}}
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def inventory(tmp_path: Path, name: str, text: str | bytes) -> ansible.AnsibleInventory:
    return ansible.load(write(tmp_path, name, text), reserved=RESULT_SETS)


def refusal(tmp_path: Path, name: str, text: str | bytes) -> str:
    with pytest.raises(InventoryError) as caught:
        inventory(tmp_path, name, text)
    return str(caught.value)


def groups(inv: ansible.AnsibleInventory) -> dict[str, str | None]:
    return {name: inv.members(name) for name in inv.names()}


def reach(inv: ansible.AnsibleInventory) -> dict[str, tuple[object, ...]]:
    """Each host's HostVars without `where`."""
    return {h: (v.hostname, v.port, v.user, v.identity_file) for h, v in inv.hosts.items()}


@pytest.mark.parametrize(("name", "text"), [("inv.yml", YAML), ("inv.json", JSON), ("hosts", YAML)])
def test_ini_and_yaml_of_one_inventory_give_the_same_groups_and_hosts(
    tmp_path: Path, name: str, text: str
) -> None:
    ini, other = inventory(tmp_path, "inv.ini", INI), inventory(tmp_path, name, text)
    key = str(tmp_path / "keys" / "id_prod")
    assert (
        groups(ini)
        == groups(other)
        == {
            "all": "db-a,db-b,db-c,solo,web[01-03,10]",
            "db": "db-a,db-b,db-c",
            "prod": "db-a,db-b,db-c,web[01-03,10]",
            "ungrouped": "solo",
            "web": "web[01-03,10]",
        }
    )
    assert reach(ini) == reach(other)
    assert reach(ini) == {
        "solo": ("10.0.0.9", None, "root", key),
        **{f"web0{i}": (None, 2200, "deploy", key) for i in (1, 2, 3)},
        "web10": ("10.0.0.10", 2222, "produser", key),
        **{f"db-{c}": (None, 2200, "produser", key) for c in "abc"},
    }
    assert ini.hosts["web10"] == HostVars("10.0.0.10", 2222, "produser", key, f"{tmp_path}/inv.ini:6")
    assert ini.hosts["db-b"].where == f"{tmp_path}/inv.ini:9"
    assert other.hosts["solo"].where == f"{tmp_path}/{name}:{1 if name.endswith('.json') else 3}"
    assert ini.warnings == other.warnings == []
    assert ini.name == "inventory" and ini.path == str(tmp_path / "inv.ini")
    assert ini.members("nosuch") is None


def test_a_group_has_the_hosts_of_its_children_recursively(tmp_path: Path) -> None:
    inv = inventory(
        tmp_path,
        "inv.ini",
        "[dc:children]\nrack1\nrack2\n[rack1:children]\nnode_a\n[rack1]\nr1\n"
        "[node_a]\nn[1:2]\n[rack2]\nr2\n[loose]\n",
    )
    assert inv.members("dc") == "n[1-2],r[1-2]"
    assert inv.members("rack1") == "n[1-2],r1"
    assert inv.members("loose") == ""
    assert inv.names() == ["all", "dc", "loose", "node_a", "rack1", "rack2", "ungrouped"]


def test_ungrouped_is_every_host_in_no_group_but_all(tmp_path: Path) -> None:
    inv = inventory(tmp_path, "inv.ini", "a\n[all]\nb\n[ungrouped]\nc\nd\n[g]\nd\n")
    assert inv.members("ungrouped") == "a,b,c"
    assert inv.members("all") == "a,b,c,d"
    yaml = inventory(
        tmp_path, "inv.yml", "all:\n  hosts: {a: }\nungrouped:\n  hosts: {c: , d: }\ng:\n  hosts: d\n"
    )
    assert yaml.members("ungrouped") == "a,c" and yaml.members("g") == "d"


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("web[01:03]", ["web01", "web02", "web03"]),
        ("web[8:10]", ["web8", "web9", "web10"]),
        ("h[001:010:4].lan", ["h001.lan", "h005.lan", "h009.lan"]),
        ("n[1:10:3]", ["n1", "n4", "n7", "n10"]),
        ("n[:2]", ["n0", "n1", "n2"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("x[y:B]", ["xy", "xz", "xA", "xB"]),
        ("x[a:e:2]", ["xa", "xc", "xe"]),
        ("r[1:2]s[a:b]", ["r1sa", "r1sb", "r2sa", "r2sb"]),
        ("r[1:2]s[a:b]:2200", ["r1sa", "r1sb", "r2sa", "r2sb"]),
    ],
)
def test_ranges_expand_as_in_ansible(tmp_path: Path, pattern: str, hosts: list[str]) -> None:
    for name, text in (("inv.ini", f"[g]\n{pattern}\n"), ("inv.yml", f"g:\n  hosts:\n    {pattern}:\n")):
        inv = inventory(tmp_path, name, text)
        assert list(inv.hosts) == hosts
        assert sorted(nodeset.expand(inv.members("g") or "", limit=100)) == sorted(hosts)
        assert {v.port for v in inv.hosts.values()} == {2200 if pattern.endswith(":2200") else None}


def test_variables_take_ansible_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's over a child group's over its parent's over all's; of two groups at one
    depth the later name, unless ansible_group_priority says otherwise."""
    ini = """\
[all:vars]
ansible_user=from_all
ansible_port=1001
ansible_host=all.example
ansible_ssh_private_key_file=~/.ssh/all

[parent:children]
child

[parent:vars]
ansible_user=from_parent
ansible_port=1002

[child:vars]
ansible_user=from_child

[child]
h1 ansible_user=from_host
h2

[alpha]
h3
[beta]
h3
[alpha:vars]
ansible_user=alpha
[beta:vars]
ansible_user=beta

[low]
h4
[high]
h4
[low:vars]
ansible_user=low
ansible_group_priority=5
[high:vars]
ansible_user=high

[legacy]
h5 ansible_host=new.example
[legacy:vars]
ansible_ssh_host=old.example
"""
    monkeypatch.setenv("HOME", "/home/op")
    inv = inventory(tmp_path, "inv.ini", ini)
    assert inv.hosts["h1"] == HostVars(
        "all.example", 1002, "from_host", "/home/op/.ssh/all", f"{tmp_path}/inv.ini:18"
    )
    assert (inv.hosts["h2"].user, inv.hosts["h2"].port) == ("from_child", 1002)
    assert inv.hosts["h3"].user == "beta"
    assert inv.hosts["h4"].user == "low"
    assert inv.hosts["h5"].hostname == "old.example"  # Ansible: the legacy name wins


def test_ansible_port_in_a_variable_and_host_port(tmp_path: Path) -> None:
    inv = inventory(
        tmp_path,
        "inv.ini",
        "a:2201\nb:2202 ansible_port=2203\nc ansible_ssh_port='2204'\nd ansible_port=22 ansible_ssh_user=u\n",
    )
    assert {h: v.port for h, v in inv.hosts.items()} == {"a": 2201, "b": 2203, "c": 2204, "d": 22}
    assert inv.hosts["d"].user == "u"
    yaml = inventory(tmp_path, "inv.yml", "all:\n  hosts:\n    a:2201:\n    b:\n      ansible_port: '2205'\n")
    assert {h: v.port for h, v in yaml.hosts.items()} == {"a": 2201, "b": 2205}


def test_key_files_are_under_home_or_the_inventory_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/op")
    (tmp_path / "sub").mkdir()
    inv = inventory(
        tmp_path,
        "sub/inv.yml",
        "all:\n  hosts:\n    a: {ansible_ssh_private_key_file: ~/.ssh/a}\n"
        "    b: {ansible_private_key_file: keys/b}\n    c: {ansible_ssh_private_key_file: /k/c}\n",
    )
    files = {h: v.identity_file for h, v in inv.hosts.items()}
    assert files == {"a": "/home/op/.ssh/a", "b": f"{tmp_path}/sub/keys/b", "c": "/k/c"}


def test_other_variables_are_not_read(tmp_path: Path) -> None:
    inv = inventory(
        tmp_path, "inv.ini", "h1 ansible_become=yes foo='{{ x }}' bar=[1,2\n[g:vars]\nnot_used=a b c\n[g]\n"
    )
    assert inv.hosts["h1"] == HostVars(where=f"{tmp_path}/inv.ini:1")
    assert inv.warnings == []


IP = "a range is [START:END] or [START:END:STEP], like web[01:20] or db-[a:f]"
ERRORS = [
    (
        "inv.ini",
        "[web]\nok\nweb/1\n",
        "3: host 'web/1' cannot be a dsh host name: a name is letters, digits,"
        " '.', '_' and '-' (give the host such a name, and its address as ansible_host)",
    ),
    (
        "inv.yml",
        "all:\n  hosts:\n    'a b':\n",
        "3: host 'a b' cannot be a dsh host name: a name is letters,"
        " digits, '.', '_' and '-' (give the host such a name, and its address as ansible_host)",
    ),
    ("inv.ini", "h:0\n", "1: host 'h': port 0 is not a number from 1 to 65535"),
    ("inv.ini", "h:65536\n", "1: host 'h': port 65536 is not a number from 1 to 65535"),
    ("inv.ini", "a\nh:\n", "2: host 'h:': a ':' after a host name is followed by its port"),
    ("inv.ini", "h ansible_port=x\n", "1: ansible_port 'x' is not a whole number"),
    (
        "inv.ini",
        "[g:vars]\nansible_port=70000\n[g]\n",
        "2: ansible_port 70000 is not a port (a number from 1 to 65535)",
    ),
    (
        "inv.yml",
        "all:\n  vars:\n    ansible_ssh_port: 0\n",
        "3: ansible_ssh_port 0 is not a port (a number from 1 to 65535)",
    ),
    ("inv.yml", "all:\n  hosts:\n    h:99999:\n", "3: host 'h': port 99999 is not a number from 1 to 65535"),
    ("inv.ini", "[g]\nweb[1:5\n", f"2: host 'web[1:5': a '[' without its ']'; {IP}"),
    ("inv.ini", "web]1\n", f"1: host 'web]1': a ']' without its '['; {IP}"),
    ("inv.ini", "web[5:1]\n", f"1: host 'web[5:1]': bad range [5:1]: START comes after END; {IP}"),
    (
        "inv.ini",
        "web[c:a]\n",
        f"1: host 'web[c:a]': bad range [c:a]: START comes after END (a-z, then A-Z); {IP}",
    ),
    (
        "inv.ini",
        "web[01:100]\n",
        f"1: host 'web[01:100]': bad range [01:100]: a START with a leading 0 pads"
        f" to its width, and END has the same width; {IP}",
    ),
    (
        "inv.ini",
        "web[1:5:0]\n",
        f"1: host 'web[1:5:0]': bad range [1:5:0]: its STEP is not a whole number from 1; {IP}",
    ),
    (
        "inv.ini",
        "web[1:a]\n",
        f"1: host 'web[1:a]': bad range [1:a]: START and END are both numbers, or both single letters; {IP}",
    ),
    (
        "inv.ini",
        "web[1-3]\n",
        f"1: host 'web[1-3]': bad range [1-3]: it is not START:END nor START:END:STEP; {IP}",
    ),
    ("inv.ini", "web[1:]\n", f"1: host 'web[1:]': bad range [1:]: it has no END; {IP}"),
    (
        "inv.ini",
        "h\nweb[1:100001]\n",
        "2: 'web[1:100001]' makes 100001 host names, more than the 100000 allowed",
    ),
    (
        "inv.yml",
        "g:\n  hosts:\n    'w[1:1000]x[1:1000]':\n",
        "3: 'w[1:1000]x[1:1000]' makes 1000000 host names, more than the 100000 allowed",
    ),
    (
        "inv.ini",
        "[a:children]\nb\n[b:children]\nc\n[c:children]\na\n",
        "2: the groups' children make a cycle: a > b > c > a (a group cannot hold itself)",
    ),
    (
        "inv.ini",
        "[a:children]\na\n",
        "2: the groups' children make a cycle: a > a (a group cannot hold itself)",
    ),
    (
        "inv.ini",
        "[x:children]\nall\n[x]\n",
        "2: the groups' children make a cycle: all > x > all (a group cannot hold itself)",
    ),
    (
        "inv.yml",
        "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n",
        "5: the groups' children make a cycle: a > b > a (a group cannot hold itself)",
    ),
    (
        "inv.ini",
        "[web:hosts]\n[web:foo]\n",
        "2: [web:foo] is not a section: a section is [GROUP], [GROUP:children] or [GROUP:vars]",
    ),
    (
        "inv.ini",
        "[web] ; no\n",
        "1: not a section: a section is [GROUP], [GROUP:children] or [GROUP:vars], without blanks",
    ),
    (
        "inv.ini",
        "[1web]\n",
        "1: '1web' cannot name a group: a group's name is letters, digits and '_', not starting with a digit",
    ),
    (
        "inv.ini",
        "[web.x]\n",
        "1: 'web.x' cannot name a group: a group's name is letters, digits and '_',"
        " not starting with a digit",
    ),
    ("inv.yml", "all:\n  children:\n    7:\n", "3: 7 cannot name a group: a group's name is text"),
    (
        "inv.ini",
        "[p:children]\nmissing\n",
        "2: [p:children] names group 'missing' that has no [missing] nor"
        " [missing:children] section (Ansible refuses it too)",
    ),
    (
        "inv.ini",
        "[x:vars]\na=1\n",
        "1: [x:vars] is for a group that has no [x] nor [x:children] section (Ansible refuses it too)",
    ),
    ("inv.ini", "[x:vars]\njust words\n[x]\n", "2: expected KEY=VALUE in [x:vars]"),
    ("inv.ini", "[x:children]\na b\n", "2: expected one group name a line in [x:children]"),
    ("inv.ini", "h a=1 b\n", "1: expected KEY=VALUE after the host, found 'b' (quote a value with blanks)"),
    ("inv.ini", "h 'open\n", "1: cannot split the host line into words: no closing quotation"),
    (
        "inv.ini",
        "[g:vars]\nansible_user=bob # the admin\n[g]\n",
        "2: ansible_user 'bob # the admin' holds a blank"
        " or a control character (in a [GROUP:vars] section a comment has a line of its own)",
    ),
    (
        "inv.ini",
        "h ansible_host=-oProxyCommand=x\n",
        "1: ansible_host '-oProxyCommand=x' is not a host name nor a user name",
    ),
    ("inv.ini", "h\n---\n", "2: '---' starts a YAML document: a YAML inventory's name ends in .yml"),
    ("inv.ini", "---\nh\n", "1: a YAML inventory is a mapping of groups (all:, GROUP:), not text"),
    ("inv.yml", "", ": empty: a YAML inventory is a mapping of groups, like `all: {hosts: {web1: }}`"),
    ("inv.yml", "- web1\n- web2\n", "1: a YAML inventory is a mapping of groups (all:, GROUP:), not a list"),
    (
        "inv.yml",
        "all:\n  hosts: [web1, web2]\n",
        "2: group 'all': hosts is a mapping, not a list (a host is a key: `web1:` on a line of its own)",
    ),
    (
        "inv.yml",
        "all:\n  children:\n    web: [a]\n",
        "3: group 'web': a group is a mapping (hosts:, children:, vars:), not a list",
    ),
    ("inv.yml", "all:\n  hosts:\n    h: 3\n", "3: host 'h': its variables are a mapping, not a number"),
    ("inv.yml", "all:\n  hosts:\n    22:\n", "3: host 22 is not text: quote it"),
    ("inv.yml", "all:\n  hosts:\n    h1: {\n", "4: not valid YAML: did not find expected node content"),
    ("inv.yml", "all:\n  hosts:\n\th1:\n", "3: not valid YAML: found character that cannot start any token"),
    (
        "inv.yml",
        "a: !!python/object:os.system x\n",
        "1: not valid YAML: could not determine a constructor for"
        " the tag 'tag:yaml.org,2002:python/object:os.system'",
    ),
    (
        "inv.yml",
        "plugin: amazon.aws.aws_ec2\n",
        "1: this configures an Ansible inventory plugin, which dsh cannot"
        " run; give dsh its output: ansible-inventory -i FILE --list --yaml > inventory.yml",
    ),
    (
        "inv.ini",
        b"# caf\xe9 is fine in a comment\n[web]\nh\xe9\n",
        "3: not UTF-8 text (an inventory is UTF-8)",
    ),
    ("inv.yml", b"all:\n  hosts:\n    h\xe9:\n", "3: not UTF-8 text (an inventory is UTF-8)"),
]


@pytest.mark.parametrize(("name", "text", "message"), ERRORS)
def test_what_cannot_be_read_is_refused_with_its_file_and_line(
    tmp_path: Path, name: str, text: str | bytes, message: str
) -> None:
    where = f"{tmp_path / name}" if message.startswith(":") else f"{tmp_path / name}:"  # ": …": no line
    assert refusal(tmp_path, name, text) == where + message


def test_an_ini_file_that_is_yaml_is_read_as_yaml(tmp_path: Path) -> None:
    for name in ("hosts", "inv.ini", "inventory.txt"):
        inv = inventory(tmp_path, name, "# a comment\nall:\n  hosts:\n    web1:\n")
        assert inv.hosts["web1"].where == f"{tmp_path / name}:4"
    assert refusal(tmp_path, "inv.ini", "all:\n  hosts: [a]\n").endswith(
        ":2: group 'all': hosts is a mapping, not a list (a host is a key: `web1:` on a line of its own)"
    )
    # Not YAML-looking: the INI's own error.
    assert (
        refusal(tmp_path, "inv2", "web1 x\n")
        == f"{tmp_path}/inv2:1: expected KEY=VALUE after the host, found 'x'"
        " (quote a value with blanks)"
    )


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(
        InventoryError, match=r"/nosuch\.ini: cannot read the inventory: No such file or directory$"
    ):
        ansible.load(tmp_path / "nosuch.ini")
    with pytest.raises(InventoryError, match=r": not a regular file; an inventory is one file$"):
        ansible.load(tmp_path)
    fifo = tmp_path / "fifo.ini"
    os.mkfifo(fifo)
    with pytest.raises(InventoryError, match=r"fifo\.ini: not a regular file"):
        ansible.load(fifo)  # and it does not hang
    big = tmp_path / "big.ini"
    with big.open("wb") as f:
        f.truncate(ansible.MAX_BYTES + 1)  # sparse: refused from its size, never read
    with pytest.raises(InventoryError, match=r"big\.ini: over 16 MiB; dsh reads an inventory whole$"):
        ansible.load(big)
    write(tmp_path, "plain", "h\n")
    with pytest.raises(InventoryError, match=r"plain/inv\.ini: cannot read the inventory: Not a directory$"):
        ansible.load(tmp_path / "plain" / "inv.ini")


def test_too_many_names_in_all_are_refused_before_they_are_made(tmp_path: Path) -> None:
    lines = "".join(f"[g{i}]\nh[1:100000]\n" for i in range(11))
    assert refusal(tmp_path, "inv.ini", lines) == (
        f"{tmp_path}/inv.ini:22: 'h[1:100000]': the inventory's host patterns make too many names"
    )
    aliases = "x: &h\n  hosts: {'n[1:90000]': }\n" + "".join(f"y{i}: *h\n" for i in range(20))
    assert "make too many names" in refusal(tmp_path, "inv.yml", aliases)


def test_warnings(tmp_path: Path) -> None:
    ini = """\
h1 ansible_password=s3cret-one ansible_connection=local
h2 ansible_connection=winrm ansible_host='{{ lookup("env", "H") }}'
h3 ansible_connection=ssh
[failed]
f1
[web-servers]
w1 ansible_ssh_pass="s3cret two"
[web-servers:vars]
ansible_become_pass=s3cret-three
ansible_password=s3cret-four
"""
    inv = inventory(tmp_path, "inv.ini", ini)
    path = tmp_path / "inv.ini"
    assert inv.warnings == [
        f"{path}:2: ansible_host is a Jinja template, which dsh does not evaluate: the ssh config"
        " decides where it applies",
        f"{path}: group 'failed' has the name of a result set: @{{failed}} is the previous line's"
        " failed hosts; write @{inventory:failed} for this group",
        f"{path}:6: group 'web-servers' has a '-', which Ansible warns about (use '_'); dsh takes it",
        f"{path}: h1: ansible_connection=local is not ssh; dsh connects over ssh anyway",
        f"{path}: h2: ansible_connection=winrm is not ssh; dsh connects over ssh anyway",
        f"{path}:1: ansible_password (and 1 more places) is ignored: dsh never reads passwords from"
        " an inventory",
        f"{path}:7: ansible_ssh_pass is ignored: dsh never reads passwords from an inventory",
        f"{path}:9: ansible_become_pass is ignored: dsh never reads passwords from an inventory",
    ]
    assert inv.hosts["h2"].hostname is None  # the template is not used: the ssh config decides
    assert inv.members("web-servers") == "w1"
    assert "s3cret" not in repr(inv.hosts) + repr(inv.warnings)


def test_yaml_warnings_vault_and_unsafe(tmp_path: Path) -> None:
    yaml = """\
all:
  hosts:
    h1:
      ansible_become_pass: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          62313365396662343061393464336163383764373764613633653634306231386433626436623361
      ansible_user: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          62313365396662343061393464336163383764373764613633653634306231386433626436623361
    h2:
      ansible_ssh_private_key_file: !unsafe '/keys/{{b}}'
    h3:
  vars:
    ansible_connection: docker
  children:
    web:
      hosts:
        h3:
        h3:
      host: oops
    fine:
lost: [1, 2]
"""
    inv = inventory(tmp_path, "inv.yml", yaml)
    path = tmp_path / "inv.yml"
    assert inv.warnings == [
        f"{path}:19: 'h3' is given twice in one mapping: the last one counts, as in Ansible",
        f"{path}:7: ansible_user is encrypted with Ansible Vault, which dsh does not decrypt: the ssh config"
        " decides where it applies",
        f"{path}:20: group 'web': 'host' is skipped: a group has hosts:, children: and vars:",
        f"{path}:22: 'lost' is skipped: a group is a mapping (hosts:, children:, vars:), not a list",
        f"{path}: h[1-3]: ansible_connection=docker is not ssh; dsh connects over ssh anyway",
        f"{path}:4: ansible_become_pass is ignored: dsh never reads passwords from an inventory",
    ]
    assert inv.hosts["h1"].user is None
    assert inv.hosts["h2"].identity_file == "/keys/{{b}}"  # !unsafe: text, not a template


def test_errors_never_show_a_password(tmp_path: Path) -> None:
    message = refusal(tmp_path, "inv.ini", "h ansible_password=my s3cret\n")
    assert (
        message == f"{tmp_path}/inv.ini:1: expected KEY=VALUE after the host, found a word without '='"
        " (quote a value with blanks)"
    )


def test_start_up_does_not_import_yaml() -> None:
    code = "import sys, dsh.inventory.ansible; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"


_PIECES = [
    *"[]:='\"#;\n\t {},-&*!|0123456789",
    "\n  ",
    "\n    ",
    "children",
    "vars",
    "hosts",
    "all",
    "web",
    "h[1:3]",
    "[a:c]",
    "[01:10:2]",
    "ansible_port",
    "ansible_host",
    "ansible_ssh_private_key_file",
    "ansible_connection",
    "ansible_group_priority",
    "ansible_password",
    "{{ x }}",
    "!vault",
    "!unsafe",
    "<<",
    "---",
    "\xe9",
    "\x00",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.lists(st.sampled_from(_PIECES), max_size=40).map("".join),
    name=st.sampled_from(["i.ini", "i.yml", "i"]),
)
def test_any_text_gives_an_inventory_or_a_sentence(tmp_path: Path, text: str, name: str) -> None:
    try:
        inv = inventory(tmp_path, name, text)
    except InventoryError as exc:
        assert str(exc).startswith(f"{tmp_path / name}:")
        return
    for group in inv.names():
        assert inv.members(group) is not None


_PREFIXES = st.sampled_from(["web", "db-", "n", "a.b", "x_"])


@st.composite
def _inventories(draw: st.DrawFn) -> tuple[str, dict[str, set[str]]]:
    """An INI inventory of groups with host lines (names, zero-padded numbers, ranges)
    and children; and each group's hosts as expected, its children's included."""
    names = [f"g{i}" for i in range(draw(st.integers(1, 4)))]
    own: dict[str, set[str]] = {g: set() for g in names}
    lines: list[str] = []
    for group in names:
        lines.append(f"[{group}]")
        for _ in range(draw(st.integers(0, 5))):
            prefix, low = draw(_PREFIXES), draw(st.integers(0, 120))
            width = len(str(low)) + draw(st.integers(0, 2)) if draw(st.booleans()) else 0
            if draw(st.booleans()):  # a range, padded to `width`
                high, step = low + draw(st.integers(0, 30)), draw(st.integers(1, 4))
                width = max(width, len(str(high))) if width else 0
                lines.append(f"{prefix}[{str(low).zfill(width)}:{str(high).zfill(width)}:{step}]")
                own[group] |= {f"{prefix}{str(n).zfill(width)}" for n in range(low, high + 1, step)}
            else:
                name = f"{prefix}{draw(st.sampled_from(string.ascii_letters))}{str(low).zfill(width)}"
                lines.append(name)
                own[group].add(name)
    children: dict[str, set[str]] = {g: set() for g in names}
    for i, parent in enumerate(names):
        kids = draw(st.sets(st.sampled_from(names[i + 1 :]))) if names[i + 1 :] else set()
        if kids:
            lines.append(f"[{parent}:children]")
            lines.extend(sorted(kids))
            children[parent] = kids

    def every(group: str) -> set[str]:
        return own[group].union(*(every(child) for child in children[group]))

    return "\n".join(lines) + "\n", {g: every(g) for g in names}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_inventories())
def test_folded_members_expand_back_to_exactly_the_groups_hosts(
    tmp_path: Path, case: tuple[str, dict[str, set[str]]]
) -> None:
    text, expected = case
    inv = inventory(tmp_path, "inv.ini", text)
    for group, hosts in expected.items():
        members = inv.members(group)
        assert members is not None
        assert sorted(nodeset.expand(members, limit=nodeset.MAX_EXPAND)) == sorted(hosts)
    assert sorted(nodeset.expand(inv.members("all") or "", limit=nodeset.MAX_EXPAND)) == sorted(inv.hosts)
