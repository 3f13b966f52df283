"""The dsh language: source spans, lexer, parser, AST and compiler (pure, no I/O)."""

from __future__ import annotations
