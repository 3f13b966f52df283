"""Approvals (issue 21): the store's side of `await approval` and of `dsh approve`.

An owner that reaches `await approval [from PRINCIPALS] [quorum N]` publishes an
ask where the approvers can read it: in each team involved, under its own path,
`t/TEAM/by/OWNER/ask/REQ` (an ApprovalAsk, on the owner's lease: it goes with
the owner). REQ is the session's id and the action: one per await. Each approver
votes under theirs, `t/TEAM/by/VOTER/vote/REQ` (a Vote), which only they can
write: nobody can make a vote appear as another's. The owner counts distinct
voters that are members of a team it asked in (read from the team's record, so
a removed member's vote no longer counts) and that the principals allow; never
the requester nor the owner, unless the owner's `[approval] self` says so (the
ask carries it, so `dsh approve` goes by the same rule). A permitted denial ends the await at once, failed.

Who may approve: `team:NAME` allows that team's members, a person's name that
person (in a team the session's person shares with them). With no `from`, a
team's session asks its own team; a person's own session must say whom.
"""

from __future__ import annotations

import contextlib
import math
import time

from dsh.runtime.ports import Approval, AwaitEnded
from dsh.session import codec, control
from dsh.session.keys import TEAM, USER, Keys, team_tree
from dsh.session.records import ApprovalAsk, ControlEntry, Owner, Vote
from dsh.store.base import KV, Compare, Put, Store, StoreDenied

#: The most a comment on a vote holds.
MAX_COMMENT = 1024


def principals_of(written: str) -> tuple[list[str], list[str]]:
    """The teams and the people a `from` list names."""
    names = [n for n in written.split(",") if n]
    return [n.removeprefix("team:") for n in names if n.startswith("team:")], [
        n for n in names if not n.startswith("team:")
    ]


def qualified(tree: str, session: str) -> str:
    """A session's name as `dsh ls` and `dsh approve` give it: team:TEAM/NAME for a
    team's, PERSON/NAME for a person's own."""
    kind, _, name = tree.partition("/")
    return f"team:{name}/{session}" if kind == TEAM else f"{name}/{session}"


def ask_key(team: str, owner: str, req: str) -> bytes:
    return team_tree(team).prefix + f"by/{owner}/ask/{req}".encode()


def vote_key(team: str, voter: str, req: str) -> bytes:
    return team_tree(team).prefix + f"by/{voter}/vote/{req}".encode()


def teams_asked(keys: Keys, principals: str) -> list[str]:
    """Where an ask is published: the teams named, else the session's own team."""
    teams, people = principals_of(principals)
    if keys.tree.kind == TEAM and (people or not teams):
        teams = [keys.tree.name, *(t for t in teams if t != keys.tree.name)]
    if not teams:
        raise AwaitEnded(
            "in a session of your own, say who may approve, from a team you are in: "
            "await approval from team:NAME[,PERSON…]"
        )
    return teams


def permitted(voter: str, team: str, principals: str, members: tuple[str, ...]) -> bool:
    """Whether `voter`, a member of `team` (`members`), may approve under `principals`."""
    if voter not in members:
        return False
    teams, people = principals_of(principals)
    if not teams and not people:
        return True  # the session's own team
    return team in teams or voter in people


class Asked:
    """One session's approvals as its owner sees them: what it asked, and the votes
    it journaled already (a takeover journals them again, once more)."""

    def __init__(self, *, requester_counts: bool = False) -> None:
        #: `[approval] self`: the requester and the owner count among the approvers.
        self.requester_counts = requester_counts
        self.published: set[tuple[str, str]] = set()
        self.counted: set[tuple[str, str, str]] = set()
        #: Who asked, per REQ, once read (kept in the session's state: see _requester).
        self.requesters: dict[str, tuple[str, str]] = {}

    async def look(
        self,
        store: Store,
        keys: Keys,
        *,
        session_id: str,
        action: str,
        principals: str,
        quorum: int,
        deadline: float,
        asked_by: tuple[str, str],
        lease: int,
        write: object,
        timeout: float,
    ) -> Approval:
        req = f"{session_id}.{action}"
        # who asked: as the first owner recorded it (a takeover does not make the new
        # owner the requester, who then could approve), else the person whose line it is
        if req not in self.requesters:
            self.requesters[req] = await _requester(store, keys, req, asked_by, timeout=timeout)
        requester, machine = self.requesters[req]
        teams = teams_asked(keys, principals)
        me = keys.me
        tree = f"{keys.tree.kind}/{keys.tree.name}"
        entries: list[ControlEntry] = []
        try:
            for team in teams:
                if (team, req) in self.published:
                    continue
                counts = self.requester_counts
                ask = ApprovalAsk(
                    req, tree, keys.name, action, requester, principals, quorum, deadline, counts
                )
                key = ask_key(team, me, req)
                made = await store.txn(
                    [Compare(key, "version", "==", 0)], [Put(key, codec.dumps(ask), lease)], timeout=timeout
                )
                self.published.add((team, req))
                if made.succeeded:
                    detail = f"{action}: {quorum} of {principals or 'team:' + team} in team {team}"
                    if self.requester_counts:
                        detail += " (the requester counts: [approval] self)"
                    entries.append(ControlEntry("ask", requester, machine, detail))
            members = {team: await control.writers(store, team_tree(team), timeout=timeout) for team in teams}
            prefixes = [(team, voter) for team in teams for voter in members[team]]
            found, _ = await store.ranges([vote_key(t, v, req) for t, v in prefixes], timeout=timeout)
        except StoreDenied:
            raise AwaitEnded(
                f"{me} is not (or no longer) in team {', '.join(teams)}: its members cannot see the request"
            ) from None
        barred = () if self.requester_counts else (requester, me)
        eligible = {
            voter
            for team, voter in prefixes
            if voter not in barred and permitted(voter, team, principals, members[team])
        }
        if len(eligible) < quorum:
            await _write(write, entries)
            await self.over(store, keys, teams, req, timeout=timeout)
            raise AwaitEnded(
                f"quorum {quorum}, but {len(eligible)} people may approve it "
                f"({principals or 'team:' + teams[0]}"
                + ("" if self.requester_counts else ", not the requester nor the owner")
                + ")"
            )
        votes: dict[str, Vote] = {}  # each permitted voter once (the same person in two teams)
        for (team, voter), kvs in zip(prefixes, found, strict=True):
            vote = _vote(kvs, vote_key(team, voter, req), req)
            if vote is None or voter not in eligible or voter in votes:
                continue
            if (vote.tree, vote.session) == (tree, keys.name):  # cast for this session, not another's ask
                votes[voter] = vote
        approvers: list[str] = []
        for voter, vote in sorted(votes.items(), key=lambda pair: pair[1].t):  # in the order cast
            what = "deny" if vote.deny else "approve"
            comment = _said(vote.comment)
            if (voter, req, what) not in self.counted:
                self.counted.add((voter, req, what))
                entries.append(
                    ControlEntry(
                        what, voter, _said(vote.machine), f"{action}" + (f" ({comment})" if comment else "")
                    )
                )
            if vote.deny:
                await _write(write, entries)
                await self.over(store, keys, teams, req, timeout=timeout)
                raise AwaitEnded(f"denied by {voter}" + (f": {comment}" if comment else ""))
            approvers.append(voter)
        await _write(write, entries)
        if len(approvers) >= quorum:
            await self.over(store, keys, teams, req, timeout=timeout)
        return Approval(tuple(approvers), quorum)

    async def over(self, store: Store, keys: Keys, teams: list[str], req: str, *, timeout: float) -> None:
        """The ask withdrawn (approved, denied, timed out, cancelled: nobody need look)."""
        for team in teams:
            with contextlib.suppress(StoreDenied):
                await store.delete(ask_key(team, keys.me, req), timeout=timeout)

    async def withdraw(
        self, store: Store, keys: Keys, session_id: str, action: str, *, timeout: float
    ) -> None:
        """Whatever this owner asked for `action`, withdrawn (the await is over)."""
        req = f"{session_id}.{action}"
        teams = [team for team, asked in self.published if asked == req]
        await self.over(store, keys, teams, req, timeout=timeout)


async def _requester(
    store: Store, keys: Keys, req: str, asked_by: tuple[str, str], *, timeout: float
) -> tuple[str, str]:
    """Who asked for approval `req`: kept in the session's state the first time."""
    key = keys.root + f"ctl/asked/{req}".encode()
    value = f"{asked_by[0]}@{asked_by[1]}".encode()
    await store.txn([Compare(key, "version", "==", 0)], [Put(key, value)], timeout=timeout)
    held = await store.get(key, timeout=timeout)
    person, _, machine = (held.value if held is not None else value).decode(errors="replace").partition("@")
    return person, machine


def _said(text: str) -> str:
    """Another person's words, as dsh shows and journals them: one line, printable, cut."""
    return "".join(c if c.isprintable() else "?" for c in text)[:MAX_COMMENT]


async def _write(write: object, entries: list[ControlEntry]) -> None:
    if entries:
        await write(entries)  # type: ignore[operator]


def _vote(kvs: list[KV], key: bytes, req: str) -> Vote | None:
    held = next((kv for kv in kvs if kv.key == key), None)
    vote = codec.readable(Vote, held)
    return vote if vote is not None and vote.req == req else None


# -- dsh approve ---------------------------------------------------------------------


async def asks_in(store: Store, team: str, *, timeout: float) -> list[tuple[str, ApprovalAsk]]:
    """Every live ask published in `team` (by whom, what), oldest first, but those
    its publisher could not have made (`_genuine`)."""
    members = await control.writers(store, team_tree(team), timeout=timeout)
    prefixes = [team_tree(team).prefix + f"by/{m}/ask/".encode() for m in members]
    found, _ = await store.ranges(prefixes, timeout=timeout)
    now = time.time()
    asks = []
    for member, kvs in zip(members, found, strict=True):
        for kv in kvs:
            ask = codec.readable(ApprovalAsk, kv)
            if ask is not None and math.isfinite(ask.deadline) and now < ask.deadline < now + 366 * 86400:
                asks.append((kv.create_revision, member, ask))
    ordered = [(member, ask) for _, member, ask in sorted(asks, key=lambda a: a[0])]
    return await _genuine(store, ordered, timeout=timeout)


async def _genuine(
    store: Store, asks: list[tuple[str, ApprovalAsk]], *, timeout: float
) -> list[tuple[str, ApprovalAsk]]:
    """The asks their publishers could have made: an ask is its session owner's, so
    one for a person's session must be that person's, and one for a team's session
    its current owner's (its owner record; kept when this caller cannot read it). A
    member who plants an ask for another's session would otherwise draw the votes
    meant for the real one (a vote goes by the ask's REQ)."""
    owners: dict[tuple[str, str], str | None] = {}
    kept = []
    for member, ask in asks:
        kind, _, name = ask.tree.partition("/")
        if kind == USER:
            if member == name:
                kept.append((member, ask))
            continue
        if kind != TEAM:
            continue
        where = (ask.tree, ask.session)
        if where not in owners:
            try:
                held = await store.get(Keys(team_tree(name), ask.session).owner, timeout=timeout)
                owner = codec.readable(Owner, held)
                owners[where] = owner.person if owner is not None else ""
            except StoreDenied:  # another team's session: not ours to check
                owners[where] = None
        if owners[where] in (None, member):
            kept.append((member, ask))
    return kept


async def votes_for(store: Store, team: str, owner: str, ask: ApprovalAsk, *, timeout: float) -> list[str]:
    """Who approved `ask` in `team` so far (by the owner's rules)."""
    members = await control.writers(store, team_tree(team), timeout=timeout)
    found, _ = await store.ranges([vote_key(team, m, ask.req) for m in members], timeout=timeout)
    return [
        m
        for m, kvs in zip(members, found, strict=True)
        if (vote := _vote(kvs, vote_key(team, m, ask.req), ask.req)) is not None
        and not vote.deny
        and (ask.requester_counts or m not in (ask.requester, owner))
        and (vote.tree, vote.session) == (ask.tree, ask.session)
        and permitted(m, team, ask.principals, members)
    ]


async def vote(
    store: Store,
    team: str,
    me: str,
    ask: ApprovalAsk,
    deny: bool,
    comment: str,
    machine: str,
    *,
    timeout: float,
) -> None:
    """`me`'s vote on `ask`, under `me`'s own path; never over one cast for another
    session under the same REQ (an ask that names another's REQ could erase it)."""
    key = vote_key(team, me, ask.req)
    cast = codec.readable(Vote, await store.get(key, timeout=timeout))
    if cast is not None and (cast.tree, cast.session) != (ask.tree, ask.session):
        return
    record = Vote(ask.req, deny, comment, machine, time.time(), ask.tree, ask.session)
    await store.put(key, codec.dumps(record), timeout=timeout)


async def waiting_for(store: Store, team: str, me: str, *, timeout: float) -> list[dict[str, object]]:
    """The asks in `team` that `me` may answer (not theirs, and allowed by their
    principals), each with how many approved so far and whether `me` did."""
    members = await control.writers(store, team_tree(team), timeout=timeout)
    found: list[dict[str, object]] = []
    for owner, ask in await asks_in(store, team, timeout=timeout):
        barred = me in (owner, ask.requester) and not ask.requester_counts
        if barred or not permitted(me, team, ask.principals, members):
            continue
        approved = await votes_for(store, team, owner, ask, timeout=timeout)
        found.append(
            {
                "team": team,
                "session": ask.session,
                "tree": ask.tree,
                "requester": ask.requester,
                "owner": owner,
                "action": ask.action,
                "quorum": ask.quorum,
                "approved": len(approved),
                "you_voted": me in approved,
                "deadline": ask.deadline,
            }
        )
    return found
