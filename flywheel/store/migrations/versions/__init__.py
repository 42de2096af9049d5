"""One file per schema revision; Alembic finds them here (flywheel/store/migrate.py)."""
