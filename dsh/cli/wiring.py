"""The one place that picks dsh's concrete classes: `Wiring` builds the store,
the session, the driver, the SSH fleet, the renderer and the executor process
of one invocation from its settings (heavy modules are imported late, on first
use: start-up)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dsh import state
from dsh.errors import UsageError

if TYPE_CHECKING:
    import subprocess

    from dsh.cli.args import Settings
    from dsh.driver import Driver
    from dsh.inventory.clustershell import ClusterShellGroups, NamesCache
    from dsh.inventory.lookup import Inventory
    from dsh.prompt import Prompter
    from dsh.remote.base import Asks, Gate, Hosts
    from dsh.render import Renderer
    from dsh.runtime.inputs import OwnInput
    from dsh.session.keys import Keys, Tree
    from dsh.session.lease import Session
    from dsh.store.base import Store
    from dsh.store.etcd import EtcdStore

#: Every store call from the command line is bounded by this.
STORE_TIMEOUT = 10.0


class Wiring:
    """Builds the parts of one dsh invocation from its settings. The settings
    are read when a part is built (a subcommand may name the session first)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._inventory: Inventory | None = None
        #: An Ansible inventory that cannot be read stops this invocation (it runs lines:
        #: without the inventory's values an alias could reach another machine); else
        #: it is said once and every group lookup that needs it fails with why (`kill`,
        #: `rm`, a client's checks, whose work does not depend on it).
        self.strict_inventory = False
        self._etcd_user: tuple[str | None] | None = None
        #: The shared-account tripwire passed in this process: the stores made after
        #: (the lease keeper's, Session.reopen) are not checked again (a refusal there,
        #: no StoreError, would end the keeper with a traceback, its lease unrenewed).
        self._vouched = False

    def store(self) -> Store:
        """The store the settings name: `local`, `sqlite:///PATH` or etcd."""
        from dsh.store import open_store

        settings = self.settings
        store = open_store(
            settings.store, settings.env, settings.config.etcd, insecure=settings.insecure_store
        )
        vouching = settings.team is not None and not self._vouched
        if vouching and settings.store.startswith("etcd"):  # one account per person
            from dsh.store.etcd import EtcdStore

            if isinstance(store, EtcdStore):
                store.first = lambda: self._vouch(store)
        return store

    async def _vouch(self, store: EtcdStore) -> None:
        """Before a team command's first store call goes on: with etcd's auth on, the
        account must be a person's; and the shared-account tripwire."""
        import time

        from dsh.osuser import os_user
        from dsh.session.keys import machine_id
        from dsh.session.seen import a_person, vouch

        if self._vouched:
            return
        person, machine = self.person(), machine_id(self.settings.env)
        if store.security.auth:
            await a_person(store, person, timeout=STORE_TIMEOUT)
        await vouch(store, person, machine, os_user(), now=time.time(), timeout=STORE_TIMEOUT)
        self._vouched = True

    def lease_ttl(self) -> float:
        """The owner lease's TTL ($DSH_LEASE_TTL, 5 s by default)."""
        raw = self.settings.env.get("DSH_LEASE_TTL", "5")
        try:
            ttl = float(raw)
        except ValueError:
            ttl = 0.0
        if not 0.5 <= ttl <= 3600:
            raise UsageError(f"DSH_LEASE_TTL={raw!r}: give the lease TTL in seconds, from 0.5 to 3600")
        return ttl

    def tree(self) -> Tree:
        """Whose sessions and keys the command works on: the team's (--team), else the
        person's (on etcd with a user, that etcd user's; else the OS user's)."""
        from dsh.session.access import person_of
        from dsh.session.keys import team_tree, user_tree

        if self.settings.team is not None:
            if self.etcd_user() is None:
                raise UsageError(
                    "--team needs an etcd store and your etcd user (a team's sessions are its "
                    "members', told apart by etcd's authentication)"
                )
            return team_tree(self.settings.team)
        return user_tree(person_of(self.etcd_user()))

    def person(self) -> str:
        """Who this invocation is: its etcd user, else its OS user."""
        from dsh.session.access import person_of

        return person_of(self.etcd_user())

    def keys(self, name: str) -> Keys:
        """The keys of session `name` in the tree, written as this person."""
        from dsh.session.access import person_of
        from dsh.session.keys import Keys

        return Keys(self.tree(), name, person_of(self.etcd_user()))

    def etcd_user(self) -> str | None:
        """The etcd user this invocation logs in as (None: not etcd, or no user)."""
        from dsh.store import etcd_options

        settings = self.settings
        if self._etcd_user is None:  # once: a password file is read on the way
            user = None
            if settings.store.startswith("etcd"):
                etcd = settings.config.etcd
                user = etcd_options(settings.store, settings.env, etcd, insecure=settings.insecure_store).user
            self._etcd_user = (user,)
        return self._etcd_user[0]

    def session(self, store: Store) -> Session:
        """The session the settings name (or a new name), in `store`."""
        from dsh.session.keys import generated_name, machine_id
        from dsh.session.lease import Session

        settings = self.settings
        ttl = self.lease_ttl()
        keys = self.keys(settings.session or generated_name())
        crash = settings.env.get("DSH_FAULT_CRASH_AFTER", "")  # the crash tests' fault injection
        crash_after = int(crash) if crash.isdigit() else 0
        return Session(
            store,
            keys,
            machine_id(settings.env),
            lease_ttl=ttl,
            timeout=STORE_TIMEOUT,
            crash_after=crash_after,
            reopen=self.store,
            named=settings.session is not None,
        )

    def driver(
        self,
        args: tuple[str, ...] | None,
        *,
        stateful: bool = True,
        reporter: Renderer | None = None,
        session: Session | None = None,
        prompter: Prompter | None = None,
        own_input: OwnInput | None = None,
    ) -> Driver:
        """A driver with the renderer (or `reporter`), this machine's spool and the
        hosts; `stateful`, of the session the settings name (or `session`)."""
        from dsh.driver import Driver
        from dsh.remote.base import Asks, Gate, LazyHosts

        settings = self.settings
        renderer = reporter or self.renderer()
        if prompter is None:
            prompter = self.prompter(renderer.message)
        if session is None and stateful:
            session = self.session(self.store())
        if session is not None:  # it runs: the local spool goes in the private state directory
            state.private_dir(self.state_dir)
        spool_root = self.state_dir / "spool" / self.machine
        gate = Gate()  # shut when the session's lease is lost: no host is acted on any more
        asks = Asks()  # a sudo asking for a password, on any host
        hosts = LazyHosts(lambda: self.fleet(renderer.message, gate, asks))
        log_dir = self.state_dir / "log"
        return Driver(
            settings.config,
            renderer,
            renderer.message,
            spool_root,
            args,
            session,
            hosts,
            log_dir,
            gate,
            sweep_always=settings.env.get("DSH_TEST_SWEEP") == "1",  # the sweep's tests
            asks=asks,
            prompter=prompter,
            outdir=settings.outdir,
            inventory=self.inventory(renderer.message),
            own_input=own_input,
            host_agent=host_agent_mode(settings.env),
        )

    def group_names(self) -> NamesCache:
        """ClusterShell's group names for completion, kept in a private file (the
        client reads it; a session's executor process refreshes it when stale)."""
        from dsh.inventory.clustershell import ClusterShellGroups, NamesCache

        # its own: a refresh's upcalls must not hold the lookups of the lines running meanwhile
        settings = self.settings
        source = ClusterShellGroups(environ=settings.env, timeout=settings.config.inventory.upcall_timeout)
        return NamesCache(state.private_dir(self.state_dir, "cache") / "clustershell-groups.json", source)

    def inventory(self, warn: Callable[[str], None]) -> Inventory:
        """Every inventory the settings name, read once: the config's [groups], the
        Ansible inventory (--inventory, or the config's), ClusterShell's groups."""
        if self._inventory is None:
            from dsh.inventory.lookup import Inventory

            settings = self.settings
            read, broken = None, None
            if settings.inventory:  # start-up: its reader is imported only when there is one
                from dsh.inventory import ansible
                from dsh.inventory.base import InventoryError
                from dsh.plan import RESULT_SETS

                try:
                    read = ansible.load(settings.inventory, RESULT_SETS)
                except InventoryError as exc:
                    if self.strict_inventory:
                        raise
                    broken = exc.message
                    warn(f"inventory: {broken} (its groups cannot be used; hosts go by the ssh config)")
                for warning in read.warnings if read is not None else ():
                    warn(f"inventory: {warning}")
            timeout = settings.config.inventory.upcall_timeout

            def clustershell() -> ClusterShellGroups:
                from dsh.inventory.clustershell import ClusterShellGroups

                return ClusterShellGroups(environ=settings.env, timeout=timeout)

            self._inventory = Inventory(settings.config.groups, read, clustershell, broken=broken)
        return self._inventory

    def prompter(self, say: Callable[[str], None], terminal: bool = True) -> Prompter | None:
        """Where a run here asks (a sudo password): the askpass program if one is
        given, else the terminal (`terminal`, when there is one), else nobody."""
        from dsh.asking import ProgramPrompter, TerminalPrompter

        if self.settings.askpass:
            return ProgramPrompter(self.settings.askpass, say)
        if terminal and TerminalPrompter.available():
            return TerminalPrompter()
        return None

    def renderer(self) -> Renderer:
        """JSON lines with --json, else text (in colour at a terminal)."""
        from dsh.render import JsonRenderer, TextRenderer

        return JsonRenderer() if self.settings.json else TextRenderer(color=self.settings.color)

    def fleet(self, warn: Callable[[str], None], gate: Gate, asks: Asks | None = None) -> Hosts:
        """SSH for hosts (asyncssh is imported here, on first use)."""
        from dsh.remote.ssh import SshFleet
        from dsh.remote.sshconfig import SshConfig

        settings = self.settings
        paths = [settings.ssh_config] if settings.ssh_config else None
        config = SshConfig.load(paths)
        for warning in config.warnings:
            warn(f"ssh config: {warning}")
        for alias, how in self.inventory(warn).host_vars().items():  # an inventory's ansible_* values
            config.override(
                alias,
                hostname=how.hostname,
                port=how.port,
                user=how.user,
                identity_file=how.identity_file,
                where=how.where,
            )
        return SshFleet(
            config,
            host_keys=settings.host_keys,
            connect_timeout=settings.config.ssh.connect_timeout,
            spool_keep=settings.config.spool.keep,
            warn=warn,
            gate=gate,
            asks=asks,
            ask_pass=settings.ask_pass,
            forward_agent=settings.forward_agent,
            host_agent=host_agent_mode(settings.env),
        )

    @property
    def state_dir(self) -> Path:
        """Where the private state directory is (dsh.state makes it)."""
        return state.directory(self.settings.env)

    @property
    def machine(self) -> str:
        """This machine's id, as a file name."""
        from dsh.session.keys import machine_id

        return machine_id(self.settings.env).replace("/", "_")

    def log_path(self, name: str) -> Path:
        """The log of session `name`'s executor process."""
        return state.private_dir(self.state_dir, "log") / f"{name}.log"

    def spawn(self, name: str, extra: list[str]) -> subprocess.Popen[bytes]:
        """Start the executor process of session `name` (design §4: with subprocess,
        in its own process session, its output to the session's log)."""
        import subprocess

        settings = self.settings
        argv = [sys.executable, "-m", "dsh", "--session", name, *settings.passed, "_executor", *extra]
        with state.open_private(self.log_path(name)) as out:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True
            )


#: How actions reach hosts: the sh wrapper alone ("off"), or through host agents
#: booted while the session waits for its next line ("auto", the default: the first
#: line pays nothing for them) or with each connection ("eager").
HOST_AGENT_MODES = ("off", "auto", "eager")


def host_agent_mode(env: Mapping[str, str]) -> str:
    """DSH_HOST_AGENT, checked (unset: auto)."""
    mode = env.get("DSH_HOST_AGENT", "") or "auto"
    if mode not in HOST_AGENT_MODES:
        raise UsageError(f"DSH_HOST_AGENT={mode!r}: say one of {', '.join(HOST_AGENT_MODES)}")
    return mode
