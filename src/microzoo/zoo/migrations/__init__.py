"""Alembic migrations of the zoo's index; run by :func:`microzoo.zoo.db.upgrade_to_head`."""
