"""Stores: the Store protocol (etcd's semantics) and its implementations."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dsh.errors import UsageError
from dsh.store.base import Store

if TYPE_CHECKING:
    from dsh.store.etcd import EtcdOptions


def open_store(
    url: str, env: Mapping[str, str], etcd: Mapping[str, str] | None = None, *, insecure: bool = False
) -> Store:
    """The store a URL names: `local` (the embedded default), `sqlite:///PATH`, or
    `etcd[s]://HOST:PORT[,…][/PREFIX]` with the [etcd] settings of the
    configuration, each overridden by its DSH_ETCD_* variable. `insecure` (or
    DSH_INSECURE_STORE=1, or [etcd] insecure = true) accepts an etcd off this
    machine without TLS or authentication."""
    if url == "local" or url.startswith("sqlite://"):
        from dsh import state
        from dsh.store.sqlite import SqliteStore, default_path

        if url != "local":
            return SqliteStore(url.removeprefix("sqlite://"))
        path = default_path(env)
        state.private_dir(path.parent)  # the state directory, made or closed private
        return SqliteStore(path)
    from dsh.store.etcd import EtcdStore

    return EtcdStore(etcd_options(url, env, etcd, insecure=insecure))


def etcd_options(
    url: str, env: Mapping[str, str], etcd: Mapping[str, str] | None = None, *, insecure: bool = False
) -> EtcdOptions:
    """An etcd URL's options, with the [etcd] settings and the DSH_ETCD_* variables."""
    from dsh.store.etcd import parse_url

    settings = dict(etcd or {})
    for name in ("prefix", "ca", "cert", "key", "user", "password", "password_file"):
        if env.get(f"DSH_ETCD_{name.upper()}"):
            settings[name] = env[f"DSH_ETCD_{name.upper()}"]
    password = settings.get("password")
    if password is None and settings.get("password_file"):
        try:
            password = Path(settings["password_file"]).read_text(encoding="utf-8").rstrip("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{settings['password_file']}: cannot read the etcd password ({exc})") from None
    return parse_url(
        url,
        ca=settings.get("ca"),
        cert=settings.get("cert"),
        key=settings.get("key"),
        user=settings.get("user"),
        password=password,
        prefix=settings.get("prefix"),
        insecure=insecure or insecure_asked(env, settings.get("insecure") == "true"),
    )


def insecure_asked(env: Mapping[str, str], configured: bool = False) -> bool:
    """Whether DSH_INSECURE_STORE says yes (1, yes, true), or else the configuration
    does: the variable, when set, wins over it (0, no, false say no)."""
    said = env.get("DSH_INSECURE_STORE", "").strip().lower()
    return said in ("1", "yes", "true") if said else configured
