//! The PostgreSQL store's bulk write against PostgreSQL's own `COPY` of the same rows, same server,
//! same run (run by benches/pg.sh, which starts a private server and sets CONSENTD_DATABASE_URL).
//! Prints figures only.
//!
//! N consents (distinct numbers, both usages' share as the generator's) go through
//! `PgStore::apply_batch` in import-sized chunks (524,288), into an empty store: decided, new states
//! and journal rows written, committed per chunk. The peer: the same rows as CSV through `COPY … FROM
//! STDIN` (what psql's `\copy` does) into a table with a primary key and a creation-time index.

use consentd::domain::{Incoming, Op, PhoneNumber, Source, Timestamp, Usage};
use consentd::store::postgres::PgStore;
use consentd::store::{Batch, ChangeContext};
use std::time::Instant;

fn main() {
    let url = std::env::var("CONSENTD_DATABASE_URL").expect("CONSENTD_DATABASE_URL (benches/pg.sh sets it)");
    let n: u64 = std::env::args().filter_map(|a| a.parse().ok()).next().unwrap_or(1_000_000);
    let changes: Vec<Incoming> = (0..n)
        .map(|i| {
            let created = 1_600_000_000_000 + (i * 7919 % 100_000_000) as i64 * 1000;
            Incoming {
                number: PhoneNumber::from_u64(491_500_000_000 + (i * 7919) % 89_999_999).unwrap(),
                usage: if i % 3 == 0 { Usage::Whatsapp } else { Usage::CallRecording },
                op: Op::Set {
                    consent: i % 4 != 0,
                    created_at: Some(Timestamp::from_millis(created)),
                    updated_at: Some(Timestamp::from_millis(created + 3_600_000)),
                },
            }
        })
        .collect();

    // The peer first, then ours, each on its own empty tables.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let peer = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(
                "DROP TABLE IF EXISTS peer; CREATE TABLE peer (phone text, channel text, consent boolean,
                 created_at timestamptz, updated_at timestamptz, PRIMARY KEY (phone, channel));
                 CREATE INDEX peer_created_at ON peer (created_at);",
            )
            .await
            .unwrap();
        let mut csv = Vec::with_capacity(n as usize * 80);
        for c in &changes {
            let Op::Set {
                consent,
                created_at,
                updated_at,
            } = c.op
            else {
                unreachable!()
            };
            use std::io::Write;
            writeln!(
                csv,
                "{},{},{},{},{}",
                c.number,
                c.usage,
                consent,
                created_at.unwrap().to_rfc3339(),
                updated_at.unwrap().to_rfc3339()
            )
            .unwrap();
        }
        let t = Instant::now();
        let sink = client.copy_in("COPY peer FROM STDIN (FORMAT csv)").await.unwrap();
        futures_util::pin_mut!(sink);
        use futures_util::SinkExt;
        for chunk in csv.chunks(1 << 20) {
            sink.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let rows = sink.finish().await.unwrap();
        assert_eq!(rows, n);
        t.elapsed().as_secs_f64()
    });
    println!("peer PostgreSQL COPY (csv)   {peer:7.2} s  {:>10.0} records/s", n as f64 / peer);

    let store = PgStore::open(&url, 4).unwrap();
    let ctx = ChangeContext {
        actor: "bench".into(),
        source: Source::Import("generic-csv".into()),
        now: Timestamp::now(),
        prefer: Default::default(),
        call_id: None,
    };
    let t = Instant::now();
    let mut batch = Batch::default();
    for (i, c) in changes.iter().enumerate() {
        batch.push_from(c, "in.csv", Some(i as u64 + 2), i as u64 + 1);
        if batch.len() == 524_288 {
            store.apply_batch(&mut batch, &ctx, false).unwrap();
        }
    }
    store.apply_batch(&mut batch, &ctx, false).unwrap();
    let ours = t.elapsed().as_secs_f64();
    println!("PgStore::apply_batch          {ours:7.2} s  {:>10.0} records/s", n as f64 / ours);
    println!("PgStore / COPY: {:.2} (goal: within 1.5)", ours / peer);
}
