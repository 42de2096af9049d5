"""Alembic's migration scripts for the store's schema (run by flywheel/store/migrate.py)."""
