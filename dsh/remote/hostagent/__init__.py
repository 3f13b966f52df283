"""dsh's host agent: the part that is sent to a host and run there (never installed).

A long-lived process per host connection that speaks every verb of the spool
wrapper (dsh/remote/spool.py) as framed requests on its stdin and replies on its
stdout, writing the same spool files with the same meaning (docs/plans/speed-ii.md
§2). Standard library only, Python 3.6 syntax, no import of dsh: the modules
below are defined on the host as the package `dshagent` in the order of MODULES
(each may import only those before it, relatively), then `serve.main(tag)` runs.
"""

#: The version of the wire protocol (wire.py), said in HELLO.
PROTOCOL = 1

#: The agent's modules, in the order a loader defines them.
MODULES = ("wire", "spoolfs", "answer", "keeper", "tail", "files", "child", "serve")
