//! The runtime's own tables, as numbered migrations. A migration is never
//! edited once released: a change is a new one. `{id}` is the dialect's
//! auto-incrementing key.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "runtime tables",
        sql: "
CREATE TABLE trackc_deployments (
    seq         {id},
    track       TEXT NOT NULL,
    version     BIGINT,
    hash        TEXT NOT NULL,
    file        TEXT NOT NULL,
    source      TEXT NOT NULL,
    steps       TEXT NOT NULL,
    deployed_at BIGINT NOT NULL,
    active      BOOLEAN NOT NULL
);
CREATE INDEX trackc_deployments_active ON trackc_deployments (track, active);
CREATE TABLE trackc_state (
    track      TEXT NOT NULL,
    key        TEXT NOT NULL,
    step       TEXT,
    entered_at BIGINT NOT NULL,
    wake_at    BIGINT,
    seq        BIGINT NOT NULL,
    run_id     BIGINT NOT NULL,
    PRIMARY KEY (track, key)
);
CREATE INDEX trackc_state_step ON trackc_state (track, step);
CREATE TABLE trackc_runs (
    id          {id},
    track       TEXT NOT NULL,
    pass_id     BIGINT,
    event_seq   BIGINT,
    event_key   TEXT,
    run_at      BIGINT NOT NULL,
    last_run    BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    records     BIGINT NOT NULL DEFAULT 0,
    changes     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX trackc_runs_track ON trackc_runs (track, finished_at);
CREATE INDEX trackc_runs_event ON trackc_runs (event_seq, track);
CREATE TABLE trackc_outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    track           TEXT NOT NULL,
    key             TEXT NOT NULL,
    target          TEXT NOT NULL,
    recipient       TEXT,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX trackc_outbox_due ON trackc_outbox (state, next_attempt_at);
CREATE TABLE trackc_events (
    seq        {id},
    id         TEXT UNIQUE,
    name       TEXT NOT NULL,
    key        TEXT,
    created_at BIGINT NOT NULL,
    done_at    BIGINT
);
CREATE INDEX trackc_events_pending ON trackc_events (done_at, seq);
CREATE TABLE trackc_owners (
    track TEXT PRIMARY KEY,
    node  BIGINT NOT NULL,
    epoch BIGINT NOT NULL
);
CREATE INDEX trackc_runs_pass ON trackc_runs (pass_id, track);
CREATE TABLE trackc_passes (
    id          {id},
    run_at      BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE TABLE trackc_marks (
    track TEXT PRIMARY KEY,
    mark  TEXT NOT NULL
);
",
    },
    Migration {
        version: 2,
        name: "indexes for the latest run of a track",
        sql: "
CREATE INDEX trackc_runs_recent ON trackc_runs (track, run_at);
CREATE INDEX trackc_runs_scheduled ON trackc_runs (track, event_seq, run_at);
",
    },
    Migration {
        version: 3,
        name: "the schema deployed with the tracks (a group's nodes compile against it)",
        sql: "
CREATE TABLE trackc_schema (
    id   BIGINT PRIMARY KEY,
    file TEXT NOT NULL,
    text TEXT NOT NULL
);
",
    },
    Migration {
        version: 4,
        name: "events decided in batches: a run's events, and which run of each track took an event several tracks listen for",
        sql: "
ALTER TABLE trackc_runs ADD COLUMN event_seqs TEXT;
UPDATE trackc_runs SET event_seqs = '[' || CAST(event_seq AS TEXT) || ']'
    WHERE event_seq IS NOT NULL;
CREATE TABLE trackc_event_runs (
    seq    BIGINT NOT NULL,
    track  TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    PRIMARY KEY (seq, track)
) {without_rowid};
INSERT INTO trackc_event_runs (seq, track, run_id)
    SELECT r.event_seq, r.track, max(r.id) FROM trackc_runs r
    JOIN trackc_events e ON e.seq = r.event_seq
    WHERE e.done_at IS NULL GROUP BY r.event_seq, r.track;
DROP INDEX trackc_events_pending;
CREATE INDEX trackc_events_waiting ON trackc_events (seq) WHERE done_at IS NULL;
",
    },
    Migration {
        version: 5,
        name: "decision history: each decision, appended with its state change",
        sql: "
CREATE TABLE trackc_history (
    id      {id},
    track   TEXT NOT NULL,
    run_id  BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    node    BIGINT,
    epoch   BIGINT,
    version TEXT NOT NULL,
    keys    TEXT NOT NULL,
    changes TEXT NOT NULL
);
CREATE INDEX trackc_history_track ON trackc_history (track, id);
CREATE INDEX trackc_history_at ON trackc_history (at);
CREATE TABLE trackc_history_legends (
    track   TEXT NOT NULL,
    version TEXT NOT NULL,
    legend  TEXT NOT NULL,
    PRIMARY KEY (track, version)
);
",
    },
    Migration {
        version: 6,
        name: "deploy history (what each deploy shipped, who, when) and the audit log",
        sql: "
CREATE TABLE trackc_deploys (
    number      {id},
    request     TEXT NOT NULL UNIQUE,
    hash        TEXT NOT NULL,
    names       TEXT NOT NULL,
    files       TEXT NOT NULL,
    schema      TEXT,
    map         TEXT NOT NULL,
    tracks      TEXT NOT NULL,
    changed     TEXT NOT NULL,
    deployed_by TEXT NOT NULL,
    role        TEXT NOT NULL,
    deployed_at BIGINT NOT NULL,
    rollback_of BIGINT
);
CREATE TABLE trackc_audit (
    id      {id},
    entry   TEXT NOT NULL UNIQUE,
    at      BIGINT NOT NULL,
    who     TEXT NOT NULL,
    role    TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    result  TEXT NOT NULL,
    address TEXT
);
CREATE INDEX trackc_audit_at ON trackc_audit (at);
",
    },
    Migration {
        version: 7,
        name: "the blocks of a run that failed, for the console's recent runs",
        sql: "
ALTER TABLE trackc_runs ADD COLUMN failed_blocks BIGINT NOT NULL DEFAULT 0;
",
    },
    Migration {
        version: 8,
        name: "the schemas of named source databases, shipped with deploys",
        sql: "
CREATE TABLE trackc_databases (
    name    TEXT PRIMARY KEY,
    dialect TEXT NOT NULL,
    file    TEXT,
    text    TEXT
);
",
    },
];

/// The migration's SQL for a dialect. `{without_rowid}` makes a table
/// its primary key's B-tree on SQLite (one tree to write instead of two);
/// PostgreSQL has no such thing.
pub fn sql_for(m: &Migration, postgres: bool) -> String {
    let (id, without_rowid) = if postgres {
        ("BIGSERIAL PRIMARY KEY", "")
    } else {
        ("INTEGER PRIMARY KEY", "WITHOUT ROWID")
    };
    m.sql
        .replace("{id}", id)
        .replace("{without_rowid}", without_rowid)
}

pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS trackc_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
    }
}
