"""The PostgreSQL inbox's tables: created or upgraded once per version, and read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hookline.inbox.base import InboxEntry

PG_SCHEMA_VERSION = "4"
"""Bump when `_ddl` changes: processes then apply it (idempotently) once."""


def _ddl(schema: str) -> str:
    return f"""
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS "{schema}".inbox (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    event_time  TIMESTAMPTZ,
    body        BYTEA       NOT NULL,
    headers     TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    last_error  TEXT,
    flow_runs   JSONB       NOT NULL DEFAULT '{{}}'::jsonb,
    not_before  TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_due ON "{schema}".inbox (status, not_before, id);
CREATE INDEX IF NOT EXISTS inbox_event ON "{schema}".inbox (event_id);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_steps (
    source      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    recipe      TEXT        NOT NULL,
    step        TEXT        NOT NULL,
    outputs     TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, event_id, recipe, step)
);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS seq SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS superseded_by BIGINT;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS note TEXT;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS timer_key TEXT;
CREATE INDEX IF NOT EXISTS inbox_timer ON "{schema}".inbox (timer_key, status)
    WHERE timer_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS "{schema}".inbox_coalesce (
    key         TEXT             NOT NULL,
    entry_id    BIGINT           NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    received    DOUBLE PRECISION NOT NULL,
    quiet       DOUBLE PRECISION NOT NULL,
    max_wait    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_coalesce_entry ON "{schema}".inbox_coalesce (entry_id);
CREATE INDEX IF NOT EXISTS inbox_unsequenced ON "{schema}".inbox (id)
    WHERE status = 'pending' AND seq <> 1;
CREATE TABLE IF NOT EXISTS "{schema}".inbox_lanes (
    lane        TEXT             NOT NULL,
    entry_id    BIGINT           NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    started     BOOLEAN          NOT NULL DEFAULT FALSE,
    PRIMARY KEY (lane, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_lanes_entry ON "{schema}".inbox_lanes (entry_id);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_lane_marks (
    lane        TEXT             PRIMARY KEY,
    event_time  DOUBLE PRECISION NOT NULL,
    entry_id    BIGINT           NOT NULL
);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_run_claims (
    flow_run_id TEXT        NOT NULL,
    state_id    TEXT        NOT NULL,
    worker      TEXT        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow_run_id, state_id)
);
"""


async def create_or_upgrade(conn: Any, schema: str) -> None:
    """Create the tables in ``schema``, or bring them to `PG_SCHEMA_VERSION`."""
    # Serialise schema creation between processes starting at the same time.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7201155)")
        # DDL takes table locks even when there is nothing to do (ALTER TABLE an ACCESS
        # EXCLUSIVE one): a process starting next to running ones could deadlock with their
        # claims. Run it only when the schema is not current.
        if await _schema_version(conn, schema) != PG_SCHEMA_VERSION:
            await conn.execute(_ddl(schema))
            await conn.execute(
                f'INSERT INTO "{schema}".inbox_meta (key, value)'
                " VALUES ('schema_version', $1) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value",
                PG_SCHEMA_VERSION,
            )


async def _schema_version(conn: Any, schema: str) -> str | None:
    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".inbox_meta') is None:
        return None
    value: str | None = await conn.fetchval(
        f"SELECT value FROM \"{schema}\".inbox_meta WHERE key = 'schema_version'"
    )
    return value


def to_entry(row: Mapping[str, Any]) -> InboxEntry:
    """The entry of a row of ``SELECT {COLUMNS} FROM inbox`` (its columns are the fields)."""
    fields = dict(row)
    flow_runs = fields["flow_runs"]
    fields["flow_runs"] = json.loads(flow_runs) if isinstance(flow_runs, str) else dict(flow_runs)
    fields["body"] = bytes(fields["body"])
    fields["headers"] = json.loads(fields["headers"])
    return InboxEntry(**fields)


def dt(epoch: float) -> datetime:
    """Epoch seconds as the UTC time asyncpg writes to a TIMESTAMPTZ column."""
    return datetime.fromtimestamp(epoch, UTC)
