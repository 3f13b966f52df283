"""Inventories: the host lists operators already keep (dsh's [groups], an Ansible
inventory, ClusterShell's group sources, host files), read behind one lookup."""
