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

mod same_answers {
    //! The PostgreSQL store gives the sled store's answers: the same batches applied to both give the
    //! same outcomes and leave the same consents, tombstones included.
    use super::Postgres;
    use consentd::domain::{Criteria, Digits, Incoming, Op, PhoneNumber, Prefer, Source, Timestamp, Usage};
    use consentd::store::dpo::Event;
    use consentd::store::postgres::PgOptions;
    use consentd::store::{AuditQuery, Batch, ChangeContext, Store, StoreOptions};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    /// One cluster for every case; a database each.
    fn cluster() -> &'static Postgres {
        static PG: OnceLock<Postgres> = OnceLock::new();
        PG.get_or_init(Postgres::start)
    }

    /// A few numbers and both usages, so that changes meet each other.
    fn change() -> impl Strategy<Value = (Incoming, Option<u32>)> {
        let time = prop::option::of((0i64..20).prop_map(|t| Timestamp::from_millis(1_700_000_000_000 + t * 1000)));
        let op = prop_oneof![
            (any::<bool>(), time.clone(), time.clone()).prop_map(|(consent, created_at, updated_at)| Op::Set {
                consent,
                created_at,
                updated_at
            }),
            time.prop_map(|at| Op::Delete { at }),
            Just(Op::Toggle),
        ];
        (0u64..4, any::<bool>(), op, prop::option::of(1u32..1000)).prop_map(|(n, w, op, line)| {
            let usage = if w { Usage::Whatsapp } else { Usage::CallRecording };
            (
                Incoming {
                    number: PhoneNumber::from_u64(491510000000 + n).unwrap(),
                    usage,
                    op,
                },
                line,
            )
        })
    }

    /// The context of the `i`th generated batch: its time, who wins a conflict, its source.
    fn batch_ctx(i: usize, prefer: u8, source: u8) -> ChangeContext {
        ChangeContext {
            actor: "tester".into(),
            source: [Source::Cli, Source::Ivr, Source::Import("crm".into())][source as usize].clone(),
            now: Timestamp::from_millis(1_700_000_010_000 + i as i64 * 1000),
            prefer: [Prefer::Newest, Prefer::Theirs, Prefer::Ours][prefer as usize],
            call_id: None,
        }
    }

    fn batch(changes: &[(Incoming, Option<u32>)]) -> Batch {
        let mut b = Batch::default();
        for (inc, line) in changes {
            match line {
                Some(l) => b.push_from(inc, "in.csv", Some(u64::from(*l)), 1),
                None => b.push(inc),
            }
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn batches_have_the_same_outcomes_and_leave_the_same_consents(
            batches in prop::collection::vec((prop::collection::vec(change(), 1..12), 0u8..3, 0u8..3), 1..6)
        ) {
            static CASE: AtomicUsize = AtomicUsize::new(0);
            let db = format!("same{}", CASE.fetch_add(1, Ordering::SeqCst));
            let pg = Store::open_postgres(&cluster().create_database(&db), &PgOptions::pool(2)).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let sled = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            for (i, (changes, prefer, source)) in batches.iter().enumerate() {
                let ctx = batch_ctx(i, *prefer, *source);
                let want = sled.apply_batch(&mut batch(changes), &ctx, false).unwrap();
                let got = pg.apply_batch(&mut batch(changes), &ctx, false).unwrap();
                prop_assert_eq!(&got, &want, "batch {}", i);
                same(&sled, &pg, &format!("batch {i}"))?;
            }
            // A purge of one number, then a reset: the same events (but for each store's keyed hash),
            // and everything read the same after each.
            let (number, now) = (PhoneNumber::from_u64(491510000001).unwrap(), Timestamp::from_millis(1_700_000_100_000));
            let (a, b) = (sled.purge(number, "dpo", now).unwrap(), pg.purge(number, "dpo", now).unwrap());
            prop_assert_eq!(a.number_hash.clone(), Some(sled.erasure_hash(number).unwrap()));
            prop_assert_eq!(b.number_hash.clone(), Some(pg.erasure_hash(number).unwrap()));
            prop_assert_eq!(Event { number_hash: None, ..b }, Event { number_hash: None, ..a });
            prop_assert_eq!(pg.history(number).unwrap(), vec![]);
            same(&sled, &pg, "after the purge")?;
            let ctx = ChangeContext { actor: "dpo".into(), source: Source::Cli, now, prefer: Prefer::Newest, call_id: None };
            let (a, b) = (sled.reset(&ctx).unwrap(), pg.reset(&ctx).unwrap());
            prop_assert_eq!(b, a);
            same(&sled, &pg, "after the reset")?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// `store copy` from sled to PostgreSQL and back leaves stores that answer every read as the
        /// original does, with the same history, kept state and next sequence number.
        #[test]
        fn a_store_copied_to_postgresql_and_back_answers_as_the_original(
            batches in prop::collection::vec((prop::collection::vec(change(), 1..12), 0u8..3, 0u8..3), 1..6),
            purge in any::<bool>(),
        ) {
            static CASE: AtomicUsize = AtomicUsize::new(0);
            let db = format!("copy{}", CASE.fetch_add(1, Ordering::SeqCst));
            let (dir, back) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let sled = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            for (i, (changes, prefer, source)) in batches.iter().enumerate() {
                let ctx = ChangeContext { call_id: (i % 2 == 1).then(|| "call-7".into()), ..batch_ctx(i, *prefer, *source) };
                sled.apply_batch(&mut batch(changes), &ctx, false).unwrap();
            }
            let number = PhoneNumber::from_u64(491510000001).unwrap();
            if purge {
                let event = sled.purge(number, "dpo", Timestamp::from_millis(1_700_000_100_000)).unwrap();
                sled.seal(event.number_hash.as_deref().unwrap(), number).unwrap();
            }
            sled.sync_put("crm", "state", b"", &serde_json::json!({"watermark": "2026-01-01T00:00:00Z"})).unwrap();
            sled.record_event("admin", "resend", "crm", serde_json::json!({"changes": 3})).unwrap();
            let pg = Store::open_postgres(&cluster().create_database(&db), &PgOptions::pool(2)).unwrap();
            let report = consentd::store::copy::copy(&sled, &pg, |_, _| {}).unwrap();
            prop_assert_eq!(report.last_change, sled.last_change().unwrap());
            same(&sled, &pg, "copied to PostgreSQL")?;
            prop_assert_eq!(pg.erasure_hash(number).unwrap(), sled.erasure_hash(number).unwrap());
            let sled2 = Store::open(back.path(), &StoreOptions::default()).unwrap();
            consentd::store::copy::copy(&pg, &sled2, |_, _| {}).unwrap();
            same(&sled, &sled2, "copied back to sled")?;
            prop_assert_eq!(sled2.store_id().unwrap(), sled.store_id().unwrap());
            prop_assert_eq!(sled2.events(0, 10).unwrap(), sled.events(0, 10).unwrap());
            // The next change gets the same sequence number in all three.
            let ctx = ChangeContext { actor: "after".into(), source: Source::Cli, now: Timestamp::from_millis(1_700_000_200_000), prefer: Prefer::Newest, call_id: None };
            let one = [Incoming { number, usage: Usage::Whatsapp, op: Op::Toggle }];
            for s in [&sled, &pg, &sled2] {
                s.apply(&one, &ctx, false).unwrap();
            }
            same(&sled, &pg, "a change after the copy")?;
            same(&sled, &sled2, "a change after the copy back")?;
            // Copying again into a store that holds data of its own is refused.
            let other = tempfile::tempdir().unwrap();
            let other = Store::open(other.path(), &StoreOptions::default()).unwrap();
            let set = Op::Set { consent: true, created_at: None, updated_at: None };
            other.apply(&[Incoming { number, usage: Usage::Whatsapp, op: set }], &ctx, false).unwrap();
            let refused = consentd::store::copy::copy(&sled, &other, |_, _| {}).unwrap_err();
            prop_assert!(refused.to_string().contains("another store's data"), "{}", refused);
        }
    }

    /// Every read of both stores gives the same answer.
    fn same(sled: &Store, pg: &Store, stage: &str) -> Result<(), TestCaseError> {
        for n in 0..4 {
            let number = PhoneNumber::from_u64(491510000000 + n).unwrap();
            for usage in [Usage::CallRecording, Usage::Whatsapp] {
                prop_assert_eq!(
                    pg.get(number, usage).unwrap(),
                    sled.get(number, usage).unwrap(),
                    "{} {:?}",
                    stage,
                    (number, usage)
                );
                prop_assert_eq!(pg.deleted_at(number, usage).unwrap(), sled.deleted_at(number, usage).unwrap());
            }
            prop_assert_eq!(pg.history(number).unwrap(), sled.history(number).unwrap(), "history, {}", stage);
        }
        prop_assert_eq!(pg.counts().unwrap(), sled.counts().unwrap(), "{}", stage);
        prop_assert_eq!(pg.last_change().unwrap(), sled.last_change().unwrap());
        prop_assert_eq!(pg.changes_since(2, 5).unwrap(), sled.changes_since(2, 5).unwrap());
        let audit = AuditQuery {
            actor: Some("tester".into()),
            from: Some(Timestamp::from_millis(1_700_000_011_000)),
            ..Default::default()
        };
        prop_assert_eq!(pg.audit(&audit, 1, 3).unwrap(), sled.audit(&audit, 1, 3).unwrap());
        // Searches, page by page (3 a page), cursors included.
        for criteria in [
            Criteria::default(),
            Criteria {
                usage: Some(Usage::Whatsapp),
                ..Default::default()
            },
            Criteria {
                consent: Some(true),
                ..Default::default()
            },
            Criteria {
                digits: Some(Digits::parse("0001").unwrap()),
                ..Default::default()
            },
            Criteria {
                number: Some(PhoneNumber::from_u64(491510000002).unwrap()),
                ..Default::default()
            },
            Criteria {
                created_from: Some(Timestamp::from_millis(1_700_000_005_000)),
                created_before: Some(Timestamp::from_millis(1_700_000_012_000)),
                ..Default::default()
            },
        ] {
            let mut cursor: Option<String> = None;
            loop {
                let want = sled.search(&criteria, cursor.as_deref(), 3).unwrap();
                let got = pg.search(&criteria, cursor.as_deref(), 3).unwrap();
                prop_assert_eq!(&got, &want, "{} {:?}", stage, criteria);
                match want.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        for digits in ["0000", "0001", "1000"] {
            let d = Digits::parse(digits).unwrap();
            prop_assert_eq!(
                pg.numbers_ending_in(&d, 2).unwrap(),
                sled.numbers_ending_in(&d, 2).unwrap(),
                "{} {}",
                stage,
                digits
            );
        }
        Ok(())
    }
}

#[test]
fn sync_state_saved_searches_and_events_are_kept_as_the_sled_store_keeps_them() {
    use consentd::domain::CriteriaText;
    use consentd::store::postgres::PgStore;
    use consentd::store::searches::SavedSearch;
    use consentd::store::{Store, StoreOptions};
    let pg_cluster = Postgres::start();
    let pg = PgStore::open(&pg_cluster.create_database("kept"), &consentd::store::postgres::PgOptions::pool(2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(dir.path(), &StoreOptions::default()).unwrap();

    // Sync state: entries by connector, kind and id; lists in id order; prefixes; next ids.
    macro_rules! both {
        ($e:ident . $m:ident ( $($a:expr),* )) => {{
            let (a, b) = (sled.$m($($a),*).unwrap(), pg.$m($($a),*).unwrap());
            assert_eq!(b, a, "{}", stringify!($m));
            a
        }};
    }
    for (connector, kind, id, v) in [
        ("crm", "dead", 2u64, json!({"n": 2})),
        ("crm", "dead", 1, json!({"n": 1})),
        ("crm", "dead", 300, json!({"n": 300})),
        ("crm", "state", 0, json!({"watermark": "2030-01-01T00:00:00Z"})),
        ("crm2", "dead", 7, json!({"n": 7})),
    ] {
        both!(s.sync_put(connector, kind, &id.to_be_bytes(), &v));
    }
    both!(s.sync_put("crm", "dead", &1u64.to_be_bytes(), &json!({"n": "one again"})));
    both!(s.sync_put_bytes("crm", "deadpart", &[0, 0, 0, 0, 0, 0, 0, 2, 0, 1], b"raw"));
    both!(s.sync_put_bytes("crm", "deadpart", &[0, 0, 0, 0, 0, 0, 0, 2, 0, 2], b"raw 2"));
    both!(s.sync_put_bytes("crm", "deadpart", &[0, 0, 0, 0, 0, 0, 0, 3, 0, 1], b"other"));
    let listed: Vec<(Vec<u8>, Value)> = both!(s.sync_list("crm", "dead"));
    assert_eq!(listed.len(), 3);
    let got: Option<Value> = both!(s.sync_get("crm", "state", &0u64.to_be_bytes()));
    assert_eq!(got.unwrap()["watermark"], "2030-01-01T00:00:00Z");
    assert_eq!(both!(s.sync_next_id("crm", "dead")), 301);
    assert_eq!(both!(s.sync_next_id("crm", "nothing")), 1);
    assert_eq!(both!(s.sync_remove_prefix("crm", "deadpart", &[0, 0, 0, 0, 0, 0, 0, 2])), 2);
    assert_eq!(
        both!(s.sync_get_bytes("crm", "deadpart", &[0, 0, 0, 0, 0, 0, 0, 3, 0, 1])),
        Some(b"other".to_vec())
    );
    assert!(both!(s.sync_remove("crm", "dead", &2u64.to_be_bytes())));
    assert!(!both!(s.sync_remove("crm", "dead", &2u64.to_be_bytes())));
    // Each store's own random id, made once.
    let id = pg.store_id().unwrap();
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()) && id != sled.store_id().unwrap(),
        "{id}"
    );
    assert_eq!(pg.store_id().unwrap(), id);

    // Saved searches: by owner then name, replaced under the same name, deleted.
    for (owner, name, digits) in [
        ("viewer", "b", "1234"),
        ("admin", "z", "5678"),
        ("viewer", "a", "9999"),
        ("viewer", "b", "4321"),
    ] {
        let s = SavedSearch {
            name: name.into(),
            owner: owner.into(),
            criteria: CriteriaText {
                digits: Some(digits.into()),
                ..Default::default()
            },
            saved_at: "2030-01-01T00:00:00Z".into(),
        };
        both!(s.save_search(&s));
    }
    let all = both!(s.saved_searches(None));
    assert_eq!(
        all.iter()
            .map(|s| (s.owner.as_str(), s.name.as_str(), s.criteria.digits.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        [("admin", "z", "5678"), ("viewer", "a", "9999"), ("viewer", "b", "4321")]
    );
    both!(s.saved_searches(Some("viewer")));
    both!(s.saved_search("viewer", "a"));
    assert!(both!(s.delete_search("viewer", "a")));
    assert!(!both!(s.delete_search("viewer", "a")));

    // Events: numbered in turn, annotated, listed after a number.
    let blank = |mut e: consentd::store::dpo::Event| {
        e.at = String::new();
        e
    };
    for i in 0..3 {
        let a = sled.record_event("admin", "sync_resend", "crm", json!({"batch": i})).unwrap();
        let b = pg.record_event("admin", "sync_resend", "crm", json!({"batch": i})).unwrap();
        assert_eq!(blank(b), blank(a));
    }
    let a = sled.annotate_event(2, json!({"files": ["x"]})).unwrap();
    let b = pg.annotate_event(2, json!({"files": ["x"]})).unwrap();
    assert_eq!(blank(b), blank(a));
    let (a, b) = (sled.events(1, 5).unwrap(), pg.events(1, 5).unwrap());
    assert_eq!(
        b.into_iter().map(blank).collect::<Vec<_>>(),
        a.into_iter().map(blank).collect::<Vec<_>>()
    );
    assert_eq!(pg.events(0, 10).unwrap().len(), 3);

    // Seals: a number sealed under its purge's key opens until the key is destroyed; no cleartext.
    let n = consentd::domain::PhoneNumber::parse("+491511234567").unwrap();
    let sealed = pg.seal("h1", n).unwrap();
    assert!(!sealed.contains("491511234567") && sealed != pg.seal("h1", n).unwrap());
    assert_eq!(pg.unseal("h1", &sealed).unwrap(), Some(n));
    assert_eq!(pg.unseal("h2", &sealed).unwrap(), None, "no key under another hash");
    pg.seal("h2", n).unwrap();
    assert!(pg.unseal("h2", &sealed).is_err(), "another purge's key does not open it");
    pg.destroy_seal("h1").unwrap();
    assert_eq!(pg.unseal("h1", &sealed).unwrap(), None);
    assert_eq!(pg_cluster.psql("kept", "SELECT count(*) FROM meta WHERE key LIKE 'seal:%'"), "1");
}

/// The daemon itself on the PostgreSQL backend: the API's everyday work, answered from the database.
#[test]
fn the_daemon_serves_from_postgresql() {
    use common::Daemon;
    let pg = Postgres::start();
    let url = pg.create_database("daemon");
    let d = Daemon::start_with(&format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n"));
    // Add, search, toggle.
    let added = d.ok(d.post("admin", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"})));
    assert_eq!(added["consent"], json!(true), "{added}");
    assert_eq!(d.search("digits=5678").len(), 1);
    d.ok(d.post("admin", "/v1/consents/toggle", json!({"ids": [added["id"]]})));
    assert_eq!(d.search("digits=5678")[0]["consent"], false);
    // The IVR's answer and the recording check.
    d.ok(d.post(
        "ivr",
        "/v1/ivr/answer",
        json!({"number": "+491512345678", "digit": "1", "call_id": "c-9"}),
    ));
    assert_eq!(
        d.ok(d.get("viewer", "/v1/checks/recording/%2B491512345678")),
        json!({"decision": "record"})
    );
    // An import over HTTP, its changes with their file and line.
    let file = "phone,channel,consent,created_at,updated_at\n\
                +4930123456,whatsapp,true,2030-01-01T00:00:00Z,2030-01-01T00:00:00Z\n\
                +4930123457,call_recording,false,2030-01-02T00:00:00Z,2030-01-02T00:00:00Z\n";
    let r = d.ok(d
        .as_("importer", reqwest::Method::POST, "/v1/imports?mapping=generic-csv&name=x.csv")
        .body(file)
        .send()
        .unwrap());
    assert_eq!(r["inserted"], 2, "{r}");
    assert_eq!(pg.psql("daemon", "SELECT count(*) FROM consents WHERE deleted_ms IS NULL"), "4");
    let audit = d.ok(d.get("admin", "/v1/audit?number=%2B4930123457"));
    assert_eq!(audit["items"][0]["origin"], json!({"file": "x.csv", "line": 3}));
    // The DPO's report and purge.
    let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491512345678"));
    assert_eq!(report["numbers"][0]["history"].as_array().unwrap().len(), 3, "{report}");
    let ev = d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": "+491512345678"})));
    assert_eq!(ev["removed"], json!({"consents": 2, "audit_entries": 3, "saved_searches": 0}));
    assert!(d.search("digits=5678").is_empty());
    assert_eq!(pg.psql("daemon", "SELECT count(*) FROM journal WHERE number = 491512345678"), "0");
    // What the daemon keeps between runs is in the database, not in its data directory.
    let data = d.dir.path().join("data");
    let kept: Vec<_> = std::fs::read_dir(&data)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "no sled store made in {}: {kept:?}", data.display());
    // Ready while the database answers; not ready (but alive) once it is gone, and calls fail clearly.
    let status = |path: &str| d.http.get(d.url(path)).send().unwrap().status().as_u16();
    assert_eq!(status("/readyz"), 200);
    drop(pg);
    assert_eq!((status("/readyz"), status("/healthz")), (503, 200));
    let r = d.get("viewer", "/v1/checks/recording/%2B4930123456");
    assert_eq!(r.status().as_u16(), 503, "unavailable, not a failure of the request");
    assert!(!r.text().unwrap().contains("postgresql://"), "the database URL is not shown");
}

/// Three daemons on one database, a connector scheduled every second on all of them: each tick is
/// run by one daemon (its lease), not three.
#[test]
fn a_connector_scheduled_on_three_daemons_runs_once_per_tick() {
    use common::{serve, Daemon};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let pulls = Arc::new(AtomicUsize::new(0));
    let counted = pulls.clone();
    let remote = serve(axum::Router::new().route(
        "/consents",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!([])) }
        }),
    ));
    let pg = Postgres::start();
    let url = pg.create_database("three");
    let config = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n\n\
         [[connectors]]\nname = \"crm\"\ntransport = \"http\"\ndirection = \"pull\"\nmapping = \"generic-json\"\n\
         schedule = \"* * * * * *\"\ncatch_up = false\n[connectors.http]\nurl = \"{remote}/consents\"\n"
    );
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start_with(&config)).collect();
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (seconds, pulled) = (started.elapsed().as_secs_f64(), pulls.load(Ordering::SeqCst));
    drop(daemons);
    eprintln!("{pulled} pulls in {seconds:.1} s by 3 daemons scheduled every second");
    // About one pull a second (the first ticks may come before every daemon is up), never three.
    assert!(
        (3..=(seconds.ceil() as usize + 1)).contains(&pulled),
        "{pulled} pulls in {seconds:.1} s by 3 daemons; {}",
        pg.psql("three", "SELECT holder, expires_ms, tick_ms FROM leases")
    );
    let ticks: usize = pg
        .psql("three", "SELECT count(*) FROM leases WHERE name = 'sync:crm'")
        .parse()
        .unwrap();
    assert_eq!(ticks, 1, "one lease row, taken tick after tick");
}

/// Two daemons on one database written to at once: every acknowledged write is there once, seen by
/// the next read on the other daemon, and the change feed has no gap and no repeat.
#[test]
fn two_daemons_take_writes_at_once_and_lose_none() {
    use common::Daemon;
    let pg = Postgres::start();
    let url = pg.create_database("two");
    let config = format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n");
    let daemons = [Daemon::start_with(&config), Daemon::start_with(&config)];
    let daemons = &daemons;
    std::thread::scope(|s| {
        for (i, d) in daemons.iter().enumerate() {
            for t in 0..2 {
                s.spawn(move || {
                    for k in 0..100 {
                        let number = format!("+4915{}{t}{k:05}", i + 1);
                        d.ok(d.post("admin", "/v1/consents", json!({"number": number, "usage": "whatsapp"})));
                        // Read back on the other daemon at once.
                        let other = &daemons[1 - i];
                        let q = format!("number={}", number.replace('+', "%2B"));
                        assert_eq!(other.search(&q).len(), 1, "{number} on the other daemon");
                    }
                });
            }
        }
    });
    assert_eq!(pg.psql("two", "SELECT count(*) FROM consents WHERE deleted_ms IS NULL"), "400");
    assert_eq!(
        pg.psql("two", "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM journal"),
        "400|400|1|400"
    );
}

/// `consentd store copy` as an operator runs it: sled to PostgreSQL and back, each copy verified; a
/// re-run finds nothing left to do; a target holding another store's data and a malformed store name
/// are refused with why.
#[test]
fn store_copy_moves_a_store_to_postgresql_and_back() {
    let pg = Postgres::start();
    let url = pg.create_database("copy_cli");
    let (dir, back, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let consentd = |dir: &std::path::Path, args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("CONSENTD_DATABASE_URL", &url)
            .env("CONSENTD_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let csv = common::fixture("generic.csv");
    let (code, _, err) = consentd(dir.path(), &["import", "--mapping", "generic-csv", csv.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = consentd(dir.path(), &["delete", "+491510000000", "--usage", "call_recording"]);
    assert_eq!(code, Some(0), "{err}");
    let history_of = |dir: &std::path::Path, n: &str| consentd(dir, &["history", n, "--json"]).1;
    let history = |dir: &std::path::Path| history_of(dir, "+491510000000");
    let before = history(dir.path());
    assert!(before.contains("generic.csv"), "{before}");

    let from = format!("sled:{}", dir.path().display());
    let (code, out, err) = consentd(other.path(), &["store", "copy", "--from", &from, "--to", "postgres:"]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["consents"], 19, "{report}");
    assert_eq!(report["changes_copied"], report["journal_entries"], "{report}");
    assert_eq!(
        pg.psql("copy_cli", "SELECT count(*) FROM consents WHERE deleted_ms IS NOT NULL"),
        "1"
    );
    // Again: the copy is complete, nothing is written twice.
    let (code, out, err) = consentd(other.path(), &["store", "copy", "--from", &from, "--to", "postgres:"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["changes_copied"], 0);
    // A copy that stopped part way goes on from the target's last change.
    let copied = report["last_change"].as_u64().unwrap();
    let (code, _, err) = consentd(dir.path(), &["toggle", "+491710007919"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = consentd(other.path(), &["store", "copy", "--from", &from, "--to", "postgres:"]);
    assert_eq!(code, Some(0), "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (again["resumed_after"].as_u64(), again["changes_copied"].as_u64()),
        (Some(copied), Some(1)),
        "{again}"
    );
    // And back into a new sled store: the same history, proof included.
    let to = format!("sled:{}", back.path().display());
    let (code, _, err) = consentd(other.path(), &["store", "copy", "--from", "postgres:", "--to", &to]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(history(back.path()), before);

    // Into a store with data of its own: refused, nothing written.
    let (code, _, err) = consentd(other.path(), &["add", "+491519999999", "--usage", "whatsapp"]);
    assert_eq!(code, Some(0), "{err}");
    let mine = history_of(other.path(), "+491519999999");
    assert!(mine.contains("whatsapp"), "{mine}");
    let (code, _, err) = consentd(
        back.path(),
        &[
            "store",
            "copy",
            "--from",
            &from,
            "--to",
            &format!("sled:{}", other.path().display()),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another store's data"), "{err}");
    assert_eq!(history_of(other.path(), "+491519999999"), mine);
    assert_eq!(history(other.path()), "[]\n");
    let (code, _, err) = consentd(other.path(), &["store", "copy", "--from", "mysql:x", "--to", &from]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--from") && err.contains("expected sled:DIR or postgres:URL"), "{err}");
}

/// A remote consent system for the lease trials: consents served by offset and limit (newest-first
/// nothing: in the order held), each page after a delay; pushed batches kept by idempotency key.
#[derive(Default)]
struct TrialRemote {
    consents: Vec<Value>,
    page_delay_ms: u64,
    push_delay_ms: u64,
    /// (idempotency key, numbers in the batch) of every push received, repeats included.
    pushes: Vec<(String, Vec<String>)>,
}

fn trial_remote(state: std::sync::Arc<std::sync::Mutex<TrialRemote>>) -> String {
    use axum::extract::{Query, State};
    type S = std::sync::Arc<std::sync::Mutex<TrialRemote>>;
    async fn pull(State(s): State<S>, Query(q): Query<std::collections::HashMap<String, String>>) -> axum::Json<Value> {
        let delay = s.lock().unwrap().page_delay_ms;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        let (offset, limit) = (q["offset"].parse::<usize>().unwrap(), q["limit"].parse::<usize>().unwrap());
        let r = s.lock().unwrap();
        let page: Vec<Value> = r.consents.iter().skip(offset).take(limit).cloned().collect();
        axum::Json(Value::Array(page))
    }
    async fn push(State(s): State<S>, headers: axum::http::HeaderMap, body: String) -> axum::http::StatusCode {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let numbers = body.as_array().map_or(vec![], |a| {
            a.iter()
                .map(|c| format!("{}/{}", c["phone"].as_str().unwrap_or("?"), c["channel"].as_str().unwrap_or("?")))
                .collect()
        });
        let delay = s.lock().unwrap().push_delay_ms;
        s.lock().unwrap().pushes.push((key, numbers));
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        axum::http::StatusCode::NO_CONTENT
    }
    common::serve(
        axum::Router::new()
            .route("/consents", axum::routing::get(pull).post(push))
            .with_state(state),
    )
}

/// `kill -9` of the daemon running a connector (holding its lease) during a pull and during a push,
/// with a second daemon on the same database: once the lease expires, the other takes a tick and
/// finishes the work; nothing is lost, nothing applied twice. CONSENTD_LEASE_TRIALS trials of each
/// (default 1; `benches/lease_kill.sh` runs more and prints the figures).
#[test]
fn a_lease_holder_killed_mid_run_leaves_the_work_to_another_daemon() {
    use common::Daemon;
    use std::time::{Duration, Instant};
    let trials: usize = std::env::var("CONSENTD_LEASE_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let pg = Postgres::start();
    let n = 2000;
    let consent = |i: usize| {
        json!({"phone": format!("+4915{}", 200_000_000 + i * 7), "channel": if i.is_multiple_of(3) { "whatsapp" } else { "call_recording" },
               "consent": !i.is_multiple_of(4), "created_at": "2024-01-01T00:00:00Z", "updated_at": format!("2024-02-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60)})
    };
    for (kind, t) in (0..trials).flat_map(|t| [("pull", t), ("push", t)]) {
        let db = format!("lease_{kind}_{t}");
        let url = pg.create_database(&db);
        let state = std::sync::Arc::new(std::sync::Mutex::new(TrialRemote {
            page_delay_ms: 40,
            push_delay_ms: 40,
            ..Default::default()
        }));
        if kind == "pull" {
            state.lock().unwrap().consents = (0..n).map(consent).collect();
        } else {
            // Our consents, imported before the daemons start, for the push to send.
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), Value::Array((0..n).map(consent).collect()).to_string()).unwrap();
            let out = Command::new(BIN)
                .args(["--data-dir", "/nonexistent-consentd-store", "import", "--mapping", "generic-json"])
                .arg(file.path())
                .env("CONSENTD_STORE_BACKEND", "postgres")
                .env("CONSENTD_DATABASE_URL", &url)
                .env("CONSENTD_LOG", "warn")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let remote = trial_remote(state.clone());
        let config = format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\nlease_secs = 3\n[import]\nchunk_records = 100\n\n\
             [[connectors]]\nname = \"crm\"\ntransport = \"http\"\ndirection = \"{kind}\"\nmapping = \"generic-json\"\n\
             schedule = \"*/2 * * * * *\"\ncatch_up = false\nbatch_size = 50\n[connectors.http]\nurl = \"{remote}/consents\"\n\
             since_param = \"since\"\npagination = {{ style = \"offset\", offset_param = \"offset\", limit_param = \"limit\", size = 100 }}\n"
        );
        let mut daemons = [Daemon::start_with(&config), Daemon::start_with(&config)];
        let running = |d: &Daemon| d.child.is_some() && d.ok(d.get("importer", "/v1/sync"))["items"][0]["running"] == true;
        let stored = || {
            pg.psql(
                &db,
                "SELECT count(*) FROM journal WHERE actor = (SELECT id FROM names WHERE name = 'sync:crm')",
            )
        };
        let sent = || {
            let r = state.lock().unwrap();
            r.pushes.len()
        };
        // Kill the daemon running the connector once part of the work is done: from a fifth to four
        // fifths of it, a different point each trial.
        let at = n / 5 + (t * 397 + usize::from(kind == "push") * 211) % (n * 3 / 5);
        let deadline = Instant::now() + Duration::from_secs(30);
        let killed = loop {
            assert!(Instant::now() < deadline, "no run got under way ({kind} trial {t})");
            let progress = if kind == "pull" {
                stored().parse::<usize>().unwrap()
            } else {
                sent() * 50
            };
            if (at..n * 9 / 10).contains(&progress) {
                if let Some(i) = (0..2).find(|&i| running(&daemons[i])) {
                    let d = &mut daemons[i];
                    Command::new("kill")
                        .args(["-KILL", &d.child.as_ref().unwrap().id().to_string()])
                        .status()
                        .unwrap();
                    let _ = d.child.take().unwrap().wait();
                    break (i, progress);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let at = Instant::now();
        // The other daemon finishes the work.
        let other = &daemons[1 - killed.0];
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let runs = other.ok(other.get("importer", "/v1/sync"))["items"][0]["runs"].clone();
            let finished = runs.as_array().unwrap().iter().any(|r| r["outcome"] == "ok");
            let interrupted = runs.as_array().unwrap().iter().any(|r| r["outcome"] == "interrupted");
            if finished && interrupted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the other daemon did not finish the {kind} ({t}): {runs}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = at.elapsed().as_secs_f64();
        if kind == "pull" {
            // Every remote consent held, each inserted once (one journal entry each).
            assert_eq!(
                pg.psql(&db, "SELECT count(*) FROM consents WHERE deleted_ms IS NULL"),
                n.to_string()
            );
            assert_eq!(stored(), n.to_string(), "no consent applied twice");
            eprintln!(
                "pull trial {t}: killed after {} of {n} stored; the other daemon finished {took:.1} s later",
                killed.1
            );
        } else {
            // Every change reached the remote, each in one batch (a batch sent again carries its key).
            let pushes = state.lock().unwrap().pushes.clone();
            let mut batches = std::collections::BTreeMap::new();
            for (key, numbers) in &pushes {
                assert_eq!(
                    batches.entry(key.clone()).or_insert_with(|| numbers.clone()),
                    numbers,
                    "a key names one batch"
                );
            }
            let mut changes: Vec<&String> = batches.values().flatten().collect();
            let total = changes.len();
            changes.sort();
            changes.dedup();
            assert_eq!((changes.len(), total), (n, n), "every change sent, none in two batches");
            eprintln!(
                "push trial {t}: killed after {} of {} batches; {} sent again under their key; the other daemon finished {took:.1} s later",
                killed.1 / 50,
                batches.len(),
                pushes.len() - batches.len()
            );
        }
    }
}

/// A background import started on one daemon is followed from another (its progress, then its
/// report); one whose daemon is killed is shown failed by the others once its progress stops; a
/// purge clears the refused records shown in kept reports.
#[test]
fn background_imports_are_seen_from_every_daemon() {
    use common::Daemon;
    let pg = Postgres::start();
    let url = pg.create_database("jobs");
    let config = format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n");
    let (mut a, b) = (Daemon::start_with(&config), Daemon::start_with(&config));
    let file = |rows: u32, prefix: &str| {
        let mut text = String::from("phone,channel,consent,created_at,updated_at\n");
        for i in 0..rows {
            text.push_str(&format!(
                "+49{prefix}{i:07},whatsapp,true,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z\n"
            ));
        }
        text.push_str("+49 151 NOPE,whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n");
        text
    };
    let start = |d: &Daemon, text: String| -> String {
        let r = d
            .as_(
                "importer",
                reqwest::Method::POST,
                "/v1/imports?mapping=generic-csv&background=true&name=big.csv",
            )
            .body(text)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        r.json::<Value>().unwrap()["status"].as_str().unwrap().to_string()
    };
    let path = start(&a, file(200_000, "1510"));
    let mut states = Vec::new();
    let done = loop {
        let s = b.ok(b.get("importer", &path));
        states.push((s["state"].as_str().unwrap().to_string(), s["bytes_read"].as_u64().unwrap()));
        if s["state"] != "running" {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        states.iter().any(|(s, read)| s == "running" && *read > 0),
        "progress seen from the other daemon: {states:?}"
    );
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        (done["report"]["inserted"].as_u64(), done["report"]["rejected"].as_u64()),
        (Some(200_000), Some(1))
    );
    assert_eq!(done["report"]["rejects"][0]["line"], 200_002);
    common::refused(b.get("admin", &path), reqwest::StatusCode::NOT_FOUND, None);
    // A purge (through the other daemon) clears the refused records shown; the counts stay.
    b.ok(b.post("dpo-office", "/v1/dpo/purge", json!({"number": "+4915100000007"})));
    let after = a.ok(a.get("importer", &path));
    assert_eq!(
        (after["report"]["rejects"].clone(), after["report"]["rejected"].clone()),
        (json!([]), json!(1)),
        "{after}"
    );
    // The daemon running an import is killed: the other shows it failed once its progress stops.
    let path = start(&a, file(600_000, "1520"));
    loop {
        let s = b.ok(b.get("importer", &path));
        if s["state"] == "running" && s["bytes_read"].as_u64().unwrap() > 0 {
            break;
        }
        assert_eq!(s["state"], "running", "killed before it ended: {s}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-KILL", &a.child.as_ref().unwrap().id().to_string()])
        .status()
        .unwrap();
    let _ = a.child.take().unwrap().wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let failed = loop {
        let s = b.ok(b.get("importer", &path));
        if s["state"] != "running" {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after its daemon died: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        (failed["state"].as_str(), failed["error"]["error"].as_str()),
        (Some("failed"), Some("interrupted")),
        "{failed}"
    );
}

/// TLS to the database (`sslmode=require`): the server's certificate is verified against
/// `store.tls_ca_file` (here CONSENTD_DATABASE_CA_FILE); a server whose certificate chains to no
/// trusted root is refused, and a server that takes TLS only refuses a client without it.
#[test]
fn tls_to_the_database_verifies_the_servers_certificate() {
    let pg = Postgres::start_tls();
    pg.psql("postgres", "CREATE DATABASE tls");
    let migrate_with = |url: &str, ca: Option<&std::path::Path>| {
        let mut c = Command::new(BIN);
        c.args(["--data-dir", "/nonexistent-consentd-store", "store", "migrate"])
            .env("CONSENTD_DATABASE_URL", url)
            .env("CONSENTD_LOG", "warn");
        if let Some(ca) = ca {
            c.env("CONSENTD_DATABASE_CA_FILE", ca);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = migrate_with(&pg.tcp_url("tls", "require"), Some(&pg.ca_file()));
    assert!(ok, "{out}");
    assert!(out.contains("\"to\": 1"), "{out}");
    // The server's sessions are encrypted: pg_stat_ssl says so for a daemon's connections.
    let d = common::Daemon::start_with(&format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\ntls_ca_file = \"{}\"\npool_size = 2\n",
        pg.tcp_url("tls", "require"),
        pg.ca_file().display()
    ));
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"})));
    assert_eq!(
        pg.psql("tls", "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'tls' AND a.pid <> pg_backend_pid()"),
        "t"
    );
    drop(d);
    // The public roots do not vouch for the test CA: refused, naming the certificate.
    let (ok, out) = migrate_with(&pg.tcp_url("tls", "require"), None);
    assert!(!ok);
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    // Without TLS the server (hostssl only) does not let us in.
    let (ok, out) = migrate_with(&pg.tcp_url("tls", "disable"), Some(&pg.ca_file()));
    assert!(!ok);
    assert!(out.contains("pg_hba") || out.contains("no encryption"), "{out}");
}
