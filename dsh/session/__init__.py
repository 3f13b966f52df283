"""Sessions in the store: what a session is as keys and records, and (as it grows)
the protocols processes speak through those keys.

    keys.py      the key layout: where each record of a session, of a user, of a
                 callback and of a running `dsh serve` lives
    records.py   one record type per value written to the store and per journal
                 entry kind, and the one codec that writes and reads them

This package sits between the runtime and the store: it may import the runtime,
the store, the remotes, the plan and the base, and nothing in the runtime
imports it. Its modules are imported one by one (`from dsh.session.keys import
…`): importing the package imports nothing else.
"""
