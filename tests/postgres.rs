//! The PostgreSQL store against a real, private PostgreSQL server (tests/common/pg.rs): its schema
//! migrations, run by `consentd store migrate` as an operator would, checked with `psql`.

mod common;

use common::pg::Postgres;
use common::BIN;
use serde_json::{json, Value};
use std::process::{Command, Output};

fn migrate(url: &str) -> Output {
    Command::new(BIN)
        .args(["--data-dir", "/nonexistent-consentd-store", "store", "migrate"])
        .env("CONSENTD_DATABASE_URL", url)
        .env("CONSENTD_LOG", "warn")
        .output()
        .unwrap()
}

fn migrated(url: &str) -> Value {
    let out = migrate(url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn migrations_apply_once_even_when_replicas_start_together_and_a_newer_schema_is_refused() {
    let pg = Postgres::start();
    let url = pg.create_database("one");
    assert_eq!(migrated(&url), json!({"from": 0, "to": 1, "applied": [1]}));
    let tables = pg.psql(
        "one",
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(
        tables,
        "consentd_schema,consentd_schema_lock,consents,events,journal,leases,meta,names,saved_searches,sync_state"
    );
    assert_eq!(migrated(&url), json!({"from": 1, "to": 1, "applied": []}));

    // Five replicas at once on a new database: one migrates, the others wait and find it done.
    let url = pg.create_database("five");
    let runs: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || migrated(&url))
        })
        .collect();
    let results: Vec<Value> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let applied: Vec<&Value> = results.iter().filter(|r| r["applied"] != json!([])).collect();
    assert_eq!(applied, [&json!({"from": 0, "to": 1, "applied": [1]})], "{results:?}");
    assert_eq!(pg.psql("five", "SELECT count(*) FROM consentd_schema"), "1");

    // A schema from a newer consentd: refused, and nothing changed.
    pg.psql("five", "INSERT INTO consentd_schema (version, name) VALUES (99, 'from the future')");
    let out = migrate(&url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("version 99, newer than this consentd's (1)"), "{err}");
}

#[test]
fn a_database_that_cannot_be_reached_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgresql://consentd:hunter2secret@localhost/x?host={}", dir.path().display());
    let out = migrate(&url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(!err.contains("hunter2secret"), "{err}");
    let out = migrate("postgresql://consentd:hunter2secret@localhost:notaport/x");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the database URL is not valid") && !err.contains("hunter2secret"),
        "{err}"
    );
}
