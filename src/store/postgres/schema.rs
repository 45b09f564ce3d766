//! The PostgreSQL store's schema, as numbered migrations applied in order, each once, in one
//! transaction with the others pending. A migration is never edited once released: a change to the
//! schema is a new migration at the end.
//!
//! Layout, beside the sled store's (see `store/mod.rs`): times are UTC milliseconds (`bigint`, as the
//! sled store keeps them, so both stores hold the same values exactly); numbers are E.164 digits as
//! `bigint`; usages their code (0 `call_recording`, 1 `whatsapp`); sources, actors and imported files
//! are ids of `names`, as in sled, so a million-row journal does not hold a million copies of a name.

/// `(version, name, SQL)`, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "consents, journal, names, saved searches, events, sync state, meta, leases",
    r#"
CREATE TABLE names (
    id integer PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- A consent, or a tombstone (consent, created_ms and updated_ms null; deleted_ms set) that an older
-- record does not pass.
CREATE TABLE consents (
    number bigint NOT NULL,
    usage smallint NOT NULL,
    consent boolean,
    created_ms bigint,
    updated_ms bigint,
    deleted_ms bigint,
    source integer NOT NULL,
    -- Trailing-digit searches as a prefix of the reversed digits (digits 678: prefix 876).
    -- In the C collation, so that a plain index serves a prefix as a range whatever the database's.
    rev_digits text COLLATE "C" GENERATED ALWAYS AS (reverse(number::text)) STORED,
    PRIMARY KEY (number, usage),
    CHECK ((deleted_ms IS NULL) = (consent IS NOT NULL AND created_ms IS NOT NULL AND updated_ms IS NOT NULL))
);
-- Tombstones too: the numbers a DPO looks up by trailing digits are those with any history.
CREATE INDEX consents_by_digits ON consents (rev_digits);
CREATE INDEX consents_by_created ON consents (usage, consent, created_ms, number) WHERE deleted_ms IS NULL;

-- The change feed, the audit trail and (with `applied` in meta) what the sled store's journal is.
CREATE TABLE journal (
    seq bigint PRIMARY KEY,
    at_ms bigint NOT NULL,
    actor integer NOT NULL,
    source integer NOT NULL,
    number bigint NOT NULL,
    usage smallint NOT NULL,
    before_consent boolean,
    before_created_ms bigint,
    before_updated_ms bigint,
    before_source integer,
    after_consent boolean,
    after_created_ms bigint,
    after_updated_ms bigint,
    after_source integer,
    -- A deletion's tombstone time.
    deleted_ms bigint,
    -- Where an imported record was read: file (a name id) and line, or record in formats without lines.
    file integer,
    line bigint,
    record bigint,
    call_id text
);
CREATE INDEX journal_by_number ON journal (number, seq);

CREATE TABLE saved_searches (
    owner text NOT NULL,
    name text NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (owner, name)
);

-- Administrative events without personal data (purges, resets, sync work by hand).
CREATE TABLE events (
    seq bigint PRIMARY KEY,
    body bytea NOT NULL
);

-- What sync keeps per connector: state, skipped ticks, imported files, dead letters, refused
-- batches, erasures to push and delivered.
CREATE TABLE sync_state (
    connector text NOT NULL,
    kind text NOT NULL,
    id bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (connector, kind, id)
);

-- The store id, the erasure key, the next sequence number, seals of purged numbers.
CREATE TABLE meta (
    key text PRIMARY KEY,
    value bytea NOT NULL
);

-- Who runs what (a connector's runs) until when, and for which scheduled tick; taken and renewed by
-- replicas, released (expires_ms 0) when the run ends.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_ms bigint NOT NULL,
    tick_ms bigint NOT NULL
);
"#,
)];

/// The newest schema this consentd knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_from_1_without_gaps() {
        for (i, (v, name, sql)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*v as usize, i + 1);
            assert!(!name.is_empty() && !sql.trim().is_empty());
        }
    }
}
