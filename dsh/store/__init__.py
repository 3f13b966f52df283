"""Stores: the Store protocol (etcd's semantics) and its implementations."""

from __future__ import annotations
