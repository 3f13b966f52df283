"""`dsh --team TEAM approve SESSION [--deny] [--comment TEXT]`: a vote on the
approval a session of the team (or one a member runs that names the team) asks
of its members (`await approval`). The vote goes under the voter's own path,
which only they can write (dsh.session.approvals)."""

from __future__ import annotations

from dsh.cli.args import flag, session_name
from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import UsageError
from dsh.exits import Exit


def approve(wiring: Wiring, rest: list[str]) -> int:
    """See the module."""
    import asyncio
    from dataclasses import replace

    from dsh.session.access import person_of
    from dsh.session.approvals import MAX_COMMENT, asks_in, permitted, qualified, vote, votes_for
    from dsh.session.control import writers
    from dsh.session.keys import machine_id, team_tree

    args = list(rest)
    deny = flag(args, "--deny")
    comment = ""
    if "--comment" in args:
        at = args.index("--comment")
        if at + 1 >= len(args):
            raise UsageError("--comment needs its text: dsh approve SESSION --comment 'looks good'")
        comment = args.pop(at + 1)
        args.pop(at)
    if len(comment.encode()) > MAX_COMMENT or not comment.isprintable():
        raise UsageError(f"a comment is one line of at most {MAX_COMMENT} bytes")
    if len(args) != 1:
        raise UsageError("approve takes: dsh --team TEAM approve SESSION [--deny] [--comment TEXT]")
    # SESSION, or qualified as `dsh ls` shows it: team:TEAM/NAME, PERSON/NAME
    where, _, name = args[0].rpartition("/")
    name = session_name(name)
    tree = None if not where else f"t/{where[5:]}" if where.startswith("team:") else f"u/{where}"
    team = wiring.settings.team
    if team is None:
        raise UsageError("approvals are a team's: dsh --team TEAM approve SESSION")
    wiring.tree()  # the checks of --team (an etcd store, a user)
    me = person_of(wiring.etcd_user())
    machine = machine_id(wiring.settings.env)
    store = wiring.store()

    async def act() -> int:
        try:
            asks = [
                (owner, ask)
                for owner, ask in await asks_in(store, team, timeout=STORE_TIMEOUT)
                if ask.session == name and tree in (None, ask.tree)
            ]
            if not asks:
                raise UsageError(f"no approval is asked in team {team} for a session named {name}")
            trees = sorted({ask.tree for _, ask in asks})
            if len(trees) > 1:
                named = ", ".join(qualified(t, name) for t in trees)
                raise UsageError(f"several sessions named {name} ask in team {team}: name one of {named}")
            owner, ask = asks[-1]  # the newest (a new owner's, after a takeover)
            if me in (ask.requester, owner) and not ask.requester_counts:
                raise UsageError(f"you asked for it: another member of team {team} approves {name}")
            members = await writers(store, team_tree(team), timeout=STORE_TIMEOUT)
            if not permitted(me, team, ask.principals, members):
                raise UsageError(f"you are not among the approvers {name} asks for ({ask.principals})")
            # one vote per REQ asked there: when an ask is there that nobody could check
            # (another team's session), the real one gets the vote too
            for req in dict.fromkeys(other.req for _, other in asks):
                await vote(
                    store, team, me, replace(ask, req=req), deny, comment, machine, timeout=STORE_TIMEOUT
                )
            if deny:
                print(f"denied {name} ({ask.requester}'s {ask.action}): its await fails")
                return Exit.OK
            counted = await votes_for(store, team, owner, ask, timeout=STORE_TIMEOUT)
            print(f"approved {name} ({ask.requester}'s {ask.action}): {len(counted)} of {ask.quorum}")
            return Exit.OK
        finally:
            await store.close()

    return asyncio.run(act())
