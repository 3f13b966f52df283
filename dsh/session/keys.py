"""The key layout: where every record dsh keeps in the store lives.

    /dsh/v1/u/USER/s/NAME/meta             the session's Meta
    /dsh/v1/u/USER/s/NAME/owner            its Owner, on the owner's lease
    /dsh/v1/u/USER/s/NAME/run/RUN          a statement run (RunRecord)
    /dsh/v1/u/USER/s/NAME/hosts/RUN        what a line resolved as it started (RunHosts)
    /dsh/v1/u/USER/s/NAME/act/ACTION/HOST  an Intent, then a Done, of one attempt on one host
                                           (or a Sleep, an Await)
    /dsh/v1/u/USER/s/NAME/bind/NAME        a binding's value (BoundText, BoundHosts, BoundResults)
    /dsh/v1/u/USER/s/NAME/sets             result sets of the last line that ran on hosts (ResultSets)
    /dsh/v1/u/USER/s/NAME/j/SEQ            the journal: every state change, in order (Entry)
    /dsh/v1/u/USER/s/NAME/todo             the plan being run (Todo)
    /dsh/v1/u/USER/s/NAME/todo-next        the index of its first statement not over (digits): 0
                                           while the plan runs (its last run record
                                           says where it is), its length once over
    /dsh/v1/u/USER/s/NAME/ctl/taken-rev    the create revision of the line the owner took last
                                           (written with the plan it became)
    /dsh/v1/u/USER/s/NAME/ctl/sig-taken/S  the create revision of the signal S an await took last
    /dsh/v1/u/USER/s/NAME/ctl/handing      the owner hands the session over (Handover)
    /dsh/v1/u/USER/s/NAME/ctl/killed       the owner stops for a `dsh kill` (put, then deleted)
    /dsh/v1/u/USER/s/NAME/ctl/done/ID      the status of submission ID, for a client on another
                                           machine (SubmissionDone)
    /dsh/v1/u/USER/by/P/s/NAME/in/ID       a line person P submitted (Submission)
    /dsh/v1/u/USER/by/P/s/NAME/cancel/ID   P asks to cancel submission ID (its value: P's machine)
    /dsh/v1/u/USER/by/P/s/NAME/viewer/ID   P follows from another machine (Viewer, on its lease)
    /dsh/v1/u/USER/by/P/s/NAME/handover    P asks the live owner to hand over (Handover, on a lease)
    /dsh/v1/u/USER/by/P/s/NAME/kill        P asks the owner to stop (KillRequest)
    /dsh/v1/u/USER/by/P/s/NAME/sig/S/SEQ   a signal P sent (`dsh signal`)
    /dsh/v1/u/USER/s/NAME/fn/FN            a function defined in the session: its source text
    /dsh/v1/u/USER/s/NAME/secret           the session's secret: callback tokens are HMACs under it
    /dsh/v1/u/USER/s/NAME/cb/TOKEN         the callbacks the session made (so `dsh rm` removes them)
    /dsh/v1/u/USER/keys/KEY                a key of the user's (`dsh key put`, `await key`)
    /dsh/v1/u/USER/seen/MACHINE            the OS user that used etcd user USER on MACHINE for
                                           team features (Seen): the shared-account tripwire
    /dsh/v1/cb/u/USER/TOKEN                a callback of a session in USER's tree (Callback)
    /dsh/v1/ev/u/USER/TOKEN                its POST, written once by `dsh serve` (CallbackEvent)
    /dsh/v1/serve/ID                       a running `dsh serve` (Registration), on its lease
    /dsh/v1/people/NAME                    etcd user NAME is a person's or a service's (Person)
    /dsh/v1/t/TEAM/members                 who is in team TEAM (Team)

`u/USER/` is a user's tree (`Tree`): their sessions (`s/`), keys (`keys/`) and
requests (`by/USER/`). `t/TEAM/` is a team's, the same with a `by/P/` for each
member P; callbacks of its sessions are `cb/t/TEAM/TOKEN`. Everything under a
tree is built by `Tree` and `Keys`.

The records are dsh.session.records'. RUN numbers the statements a session has
run; ACTION is RUN.STAGE.ATTEMPT. The meta's random `id` tells this session from
an earlier one of the same name: spools on hosts are keyed by NAME.ID, so a
session removed and made again never meets the claims of the old one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote

from dsh.bytestext import to_bytes
from dsh.osuser import os_user
from dsh.record import record

#: Every key of dsh's starts here (after a store's own prefix, for etcd).
KEY_ROOT = b"/dsh/v1/"
#: Where every running `dsh serve` says where it is reachable.
SERVERS = KEY_ROOT + b"serve/"


#: The kind of a user's tree (`u/USER/`), and of a team's (`t/TEAM/`).
USER = "u"
TEAM = "t"


@record
class Tree:
    """Whose sessions and keys these are: a user's (`u/USER/`) today. A team's tree
    is another kind beside it: every key under a tree is built here, so callers
    that hold a tree need not change when one is added."""

    kind: str
    name: str

    @property
    def prefix(self) -> bytes:
        return KEY_ROOT + f"{self.kind}/{self.name}/".encode()

    @property
    def sessions(self) -> bytes:
        """The prefix of every key of every session in the tree."""
        return self.prefix + b"s/"

    def key(self, key: str) -> bytes:
        """Where `key` of the tree's keys lives (`dsh key put`, `await key`): any bytes."""
        return KEY_ROOT + to_bytes(f"{self.kind}/{self.name}/keys/{key.lstrip('/')}")


def user_tree(user: str) -> Tree:
    """A user's tree: their sessions and keys."""
    return Tree(USER, user)


def team_tree(team: str) -> Tree:
    """A team's tree: the sessions and keys its members share."""
    return Tree(TEAM, team)


def seen_key(person: str, machine: str) -> bytes:
    """Which OS user used etcd user `person` on `machine` for team features (records.Seen)."""
    return user_tree(person).prefix + b"seen/" + quote(machine, safe="").encode()


def members_key(team: str) -> bytes:
    """Who is in a team (records.Team, written by etcd's root)."""
    return team_tree(team).prefix + b"members"


#: Every callback, and every callback's POST: `dsh serve`'s role reads the one and
#: writes the other; a tree's own users read and write those of their tree only.
CALLBACKS = KEY_ROOT + b"cb/"
EVENTS = KEY_ROOT + b"ev/"


def callback_path(tree: Tree, token: str) -> str:
    """A callback's path in its URL and under CALLBACKS and EVENTS: KIND/NAME/TOKEN
    (the tree in it, so that it is found in the tree's keys, which only the tree's
    users and `dsh serve` can reach)."""
    return f"{tree.kind}/{quote(tree.name, safe='')}/{token}"


def parse_callback_path(path: str) -> tuple[Tree, str] | None:
    """The tree and token of a callback's path (`callback_path`), or None."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] not in (USER, TEAM):
        return None
    name = unquote(parts[1])
    if not name or len(name) > 64 or "/" in name or not name.isprintable():
        return None
    return Tree(parts[0], name), parts[2]


def callback_key(tree: Tree, token: str) -> bytes:
    """A callback of a session in `tree`."""
    return CALLBACKS + callback_path(tree, token).encode()


def event_key(tree: Tree, token: str) -> bytes:
    """The POST a callback of a session in `tree` received."""
    return EVENTS + callback_path(tree, token).encode()


def legacy_callback(token: str) -> bytes:
    """Where a callback was kept before issue 21 (with its event under it):
    `dsh rm` removes one an older session left, where it may."""
    return CALLBACKS + token.encode()


@record
class Keys:
    """The keys of one session in a tree (a person's), and of the control records
    each person writes for it under a path of their own (`control`)."""

    tree: Tree
    name: str
    #: Whom this process writes control records as: the person it logs in as (by
    #: default, the tree's: a person's own tree).
    person: str = ""

    @property
    def me(self) -> str:
        return self.person or self.tree.name

    def control(self, person: str | None = None) -> bytes:
        """Where `person` (by default this process's) writes control records of the
        session: outside its state, so that a role can give each person theirs."""
        return self.tree.prefix + f"by/{person or self.me}/s/{self.name}/".encode()

    def inbox_of(self, person: str | None = None) -> bytes:
        return self.control(person) + b"in/"

    def cancels_of(self, person: str | None = None) -> bytes:
        return self.control(person) + b"cancel/"

    def viewers_of(self, person: str | None = None) -> bytes:
        return self.control(person) + b"viewer/"

    def handover_of(self, person: str | None = None) -> bytes:
        return self.control(person) + b"handover"

    def kill_of(self, person: str | None = None) -> bytes:
        return self.control(person) + b"kill"

    def signals_of(self, signal: str, person: str | None = None) -> bytes:
        return self.control(person) + f"sig/{signal}/".encode()

    @property
    def root(self) -> bytes:
        return self.tree.sessions + f"{self.name}/".encode()

    @property
    def meta(self) -> bytes:
        return self.root + b"meta"

    @property
    def owner(self) -> bytes:
        return self.root + b"owner"

    @property
    def sets(self) -> bytes:
        return self.root + b"sets"

    @property
    def journal(self) -> bytes:
        return self.root + b"j/"

    @property
    def runs(self) -> bytes:
        return self.root + b"run/"

    @property
    def bindings(self) -> bytes:
        return self.root + b"bind/"

    @property
    def killed(self) -> bytes:
        """The owner stops for a `dsh kill` (put and deleted again: its followers see it)."""
        return self.root + b"ctl/killed"

    @property
    def todo(self) -> bytes:
        return self.root + b"todo"

    @property
    def todo_next(self) -> bytes:
        return self.root + b"todo-next"

    @property
    def taken(self) -> bytes:
        """The create revision of the submission the owner took last."""
        return self.root + b"ctl/taken-rev"

    def signal_taken(self, signal: str) -> bytes:
        """The create revision of the signal of that name an await took last."""
        return self.root + f"ctl/sig-taken/{signal}".encode()

    @property
    def seen_cancel(self) -> bytes:
        """The mod revision of the newest cancel request the owner handled."""
        return self.root + b"ctl/seen-cancel"

    @property
    def handing(self) -> bytes:
        """The owner hands the session over (the Handover it took): its followers see it."""
        return self.root + b"ctl/handing"

    @property
    def callbacks(self) -> bytes:
        return self.root + b"cb/"

    @property
    def secret(self) -> bytes:
        return self.root + b"secret"

    @property
    def done(self) -> bytes:
        return self.root + b"ctl/done/"

    @property
    def functions(self) -> bytes:
        return self.root + b"fn/"

    def user_key(self, key: str) -> bytes:
        return self.tree.key(key)

    def run(self, run: int) -> bytes:
        return self.runs + b"%08d" % run

    def action(self, action: str, host: str | None) -> bytes:
        return self.root + f"act/{action}/{host or '-'}".encode()

    def hosts(self, run: int) -> bytes:
        """What run `run` resolved when it started (records.RunHosts)."""
        return self.root + b"hosts/%08d" % run

    def actions_of(self, run: int) -> bytes:
        """The prefix of the action records of run `run`."""
        return self.root + f"act/{run}.".encode()


def user_name() -> str:
    """The OS user's name: the tree of a process with no etcd user."""
    return os_user()


def machine_id(env: Mapping[str, str]) -> str:
    return env.get("DSH_MACHINE_ID") or socket.gethostname()


def generated_name() -> str:
    return time.strftime("s%Y%m%d-%H%M%S-") + os.urandom(2).hex()
