"""Running a SQL store's tests on both backends: SQLite, and (as integration tests) PostgreSQL."""

from pathlib import Path

import pytest

SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
"""``params`` of a fixture whose value is :func:`sql_target`."""


def sql_target(request: pytest.FixtureRequest, sqlite_path: Path) -> str:
    """What the store is opened with for this backend: ``sqlite_path`` as given (its folder may not exist yet),
    or the DSN of a PostgreSQL schema of this test's own (``pg_dsn``, tests/services/conftest.py)."""
    if request.param == "sqlite":
        return str(sqlite_path)
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn
