"""tests/pg_server.py's private server: what a machine without a running PostgreSQL gets."""

from __future__ import annotations

from tests.pg_server import PostgresServer, answers, create_database, drop_database


def test_private_server_starts_serves_and_stops() -> None:
    server = PostgresServer().start()
    try:
        assert server.port != 5432
        url = create_database(server.url)
        assert answers(url)
        drop_database(url)
        assert not answers(url)  # dropped
    finally:
        server.stop()
    assert not answers(server.url)
    assert not server.dir.exists()
