"""The schema history both store backends share: ``MIGRATIONS``, oldest first.

SQLite (``db.py``) keeps how many steps it has applied in ``PRAGMA user_version``, PostgreSQL
(``postgres.py``) in the ``llmrelay_schema`` table; each backend applies the steps it lacks at
open, one transaction each. New tables go in a new step appended to ``MIGRATIONS``, usually a
``Migration.portable(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field


def postgres_ddl(statements: tuple[str, ...]) -> tuple[str, ...]:
    """SQLite DDL for PostgreSQL, where REAL is 4 bytes (epoch seconds would lose minutes)."""
    return tuple(re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement) for statement in statements)


@dataclass(frozen=True)
class Migration:
    """One schema step; its statements run in order inside a single transaction.

    ``statements`` are for SQLite and for any dialect not named in ``dialects``; a step whose
    DDL differs (PostgreSQL's REAL is 4 bytes, it has no WITHOUT ROWID, ``user`` is reserved)
    carries the other dialect's statements in ``dialects``, keyed by ``Store.dialect``.
    """

    name: str
    statements: tuple[str, ...]
    dialects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def statements_for(self, dialect: str) -> tuple[str, ...]:
        return self.dialects.get(dialect, self.statements)

    @classmethod
    def portable(cls, name: str, statements: tuple[str, ...]) -> Migration:
        """A step written once: PostgreSQL runs the same statements with REAL widened."""
        return cls(name, statements, {"postgresql": postgres_ddl(statements)})


#: The schema history, oldest first, for both backends: SQLite keeps how many have been applied
#: in ``PRAGMA user_version``, PostgreSQL in the ``llmrelay_schema`` table (``proxy/store/postgres``).
#: Append only: a released step is never edited, so any older database can be brought forward.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "models",
        (
            """CREATE TABLE models (
                id TEXT PRIMARY KEY,
                model_name TEXT NOT NULL,
                litellm_params TEXT NOT NULL,
                model_info TEXT NOT NULL DEFAULT '{}',
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
        ),
        {
            "postgresql": (
                """CREATE TABLE models (
                    id TEXT PRIMARY KEY,
                    model_name TEXT NOT NULL,
                    litellm_params TEXT NOT NULL,
                    model_info TEXT NOT NULL DEFAULT '{}',
                    created_at DOUBLE PRECISION NOT NULL,
                    updated_at DOUBLE PRECISION NOT NULL
                )""",
            ),
        },
    ),
    Migration(
        "model_versions_and_tombstones",
        (
            "ALTER TABLE models ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE models ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX models_model_name ON models (model_name)",
            """CREATE TABLE store_meta (
                key TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            ) WITHOUT ROWID""",
            # Start above zero when rows already exist, so a poller that saw 0 reloads.
            "INSERT INTO store_meta (key, value) VALUES ('models_version', (SELECT COUNT(*) FROM models))",
        ),
        {
            "postgresql": (
                "ALTER TABLE models ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
                "ALTER TABLE models ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
                "CREATE INDEX models_model_name ON models (model_name)",
                "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
                "INSERT INTO store_meta (key, value) VALUES ('models_version', (SELECT COUNT(*) FROM models))",
            ),
        },
    ),
    Migration(
        "spend_logs",
        (
            """CREATE TABLE spend_logs (
                request_id TEXT PRIMARY KEY,
                created_at REAL NOT NULL,
                model TEXT NOT NULL DEFAULT '',
                deployment_id TEXT,
                provider TEXT,
                api_key_hash TEXT,
                user TEXT,
                prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0,
                total_tokens INTEGER NOT NULL DEFAULT 0,
                spend REAL NOT NULL DEFAULT 0,
                status INTEGER,
                latency_ms REAL,
                metadata TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX spend_logs_created_at ON spend_logs (created_at)",
            "CREATE INDEX spend_logs_model ON spend_logs (model)",
            "CREATE INDEX spend_logs_api_key_hash ON spend_logs (api_key_hash)",
        ),
        {
            "postgresql": (
                """CREATE TABLE spend_logs (
                    request_id TEXT PRIMARY KEY,
                    created_at DOUBLE PRECISION NOT NULL,
                    model TEXT NOT NULL DEFAULT '',
                    deployment_id TEXT,
                    provider TEXT,
                    api_key_hash TEXT,
                    "user" TEXT,
                    prompt_tokens BIGINT NOT NULL DEFAULT 0,
                    completion_tokens BIGINT NOT NULL DEFAULT 0,
                    total_tokens BIGINT NOT NULL DEFAULT 0,
                    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
                    status INTEGER,
                    latency_ms DOUBLE PRECISION,
                    metadata TEXT NOT NULL DEFAULT '{}'
                )""",
                "CREATE INDEX spend_logs_created_at ON spend_logs (created_at)",
                "CREATE INDEX spend_logs_model ON spend_logs (model)",
                "CREATE INDEX spend_logs_api_key_hash ON spend_logs (api_key_hash)",
            ),
        },
    ),
    Migration.portable(
        "config_generations",
        (
            # One running proxy (a master and its workers) is an "instance"; each reload is a
            # validated copy of the config text, numbered per instance (proxy/generations.py).
            """CREATE TABLE config_generations (
                instance TEXT NOT NULL,
                generation INTEGER NOT NULL,
                path TEXT,
                source TEXT NOT NULL,
                created_at REAL NOT NULL,
                PRIMARY KEY (instance, generation)
            )""",
            """CREATE TABLE config_workers (
                instance TEXT NOT NULL,
                pid INTEGER NOT NULL,
                generation INTEGER NOT NULL,
                updated_at REAL NOT NULL,
                PRIMARY KEY (instance, pid)
            )""",
        ),
    ),
    Migration.portable(
        "keys_teams_spend_totals",
        (
            # Virtual keys: ``token`` is the sha256 hex of the key, never the key itself.
            """CREATE TABLE keys (
                token TEXT PRIMARY KEY,
                key_name TEXT,
                key_alias TEXT,
                team_id TEXT,
                user_id TEXT,
                models TEXT NOT NULL DEFAULT '[]',
                max_budget REAL,
                budget_duration TEXT,
                budget_anchor REAL NOT NULL DEFAULT 0,
                expires REAL,
                rpm_limit INTEGER,
                tpm_limit INTEGER,
                max_parallel_requests INTEGER,
                metadata TEXT NOT NULL DEFAULT '{}',
                allowed_routes TEXT NOT NULL DEFAULT '[]',
                blocked INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            "CREATE INDEX keys_team_id ON keys (team_id)",
            "CREATE INDEX keys_user_id ON keys (user_id)",
            "CREATE INDEX keys_key_alias ON keys (key_alias)",
            """CREATE TABLE teams (
                team_id TEXT PRIMARY KEY,
                team_alias TEXT,
                models TEXT NOT NULL DEFAULT '[]',
                max_budget REAL,
                budget_duration TEXT,
                budget_anchor REAL NOT NULL DEFAULT 0,
                rpm_limit INTEGER,
                tpm_limit INTEGER,
                max_parallel_requests INTEGER,
                members_with_roles TEXT NOT NULL DEFAULT '[]',
                metadata TEXT NOT NULL DEFAULT '{}',
                blocked INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            # Running spend per key, team and user and budget period (0: a budget that never resets).
            """CREATE TABLE spend_totals (
                entity TEXT NOT NULL,
                period INTEGER NOT NULL,
                spend REAL NOT NULL DEFAULT 0,
                updated_at REAL NOT NULL,
                PRIMARY KEY (entity, period)
            )""",
            "CREATE INDEX spend_totals_updated_at ON spend_totals (updated_at)",
            "ALTER TABLE spend_logs ADD COLUMN team_id TEXT",
            "ALTER TABLE spend_logs ADD COLUMN key_alias TEXT",
            "CREATE INDEX spend_logs_team_id ON spend_logs (team_id)",
            'CREATE INDEX spend_logs_user ON spend_logs ("user")',
            "INSERT INTO store_meta (key, value) VALUES ('keys_version', 1)",
        ),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
