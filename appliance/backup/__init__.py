"""Backup and restore: one signed archive of the appliance's state, restored atomically (see restore.py)."""
