"""The REPL: the only prompt-toolkit user (app.py, completion.py) and the dsh lexer for
Pygments; and, importing no prompt-toolkit, the statement reader that the client and the
driver share (statements.py) and where a client's lines come from (lines.py)."""
