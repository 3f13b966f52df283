"""The REPL: the only prompt-toolkit user (and the dsh lexer for Pygments)."""
