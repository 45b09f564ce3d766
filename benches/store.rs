//! Store benchmark without file parsing: applies N consents shaped like gen_consents.py's in import
//! chunks, then times searches. Prints figures; asserts nothing. `cargo bench --bench store -- [N]`.

use consentd::domain::{Criteria, Digits, Incoming, Op, PhoneNumber, Source, Timestamp, Usage};
use consentd::store::{ChangeContext, Store, StoreOptions};
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let n: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let defaults = StoreOptions::default();
    let chunk: usize = std::env::var("CHUNK").ok().and_then(|c| c.parse().ok()).unwrap_or(1 << 19);
    let page: usize = std::env::var("PAGE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(defaults.page_bytes);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            cache_bytes: defaults.cache_bytes,
            page_bytes: page,
        },
    )
    .expect("open");
    let prefixes = [4915u64, 4917, 3312, 4670, 35840, 4478, 1212, 1415, 3906, 3461];
    let base = 1_704_067_200_000i64;
    let mut seed = 1u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ctx = ChangeContext {
        actor: "bench".into(),
        source: Source::Import("bench".into()),
        now: Timestamp::now(),
        prefer: consentd::domain::Prefer::Newest,
        call_id: None,
    };
    let started = Instant::now();
    let mut batch = Vec::with_capacity(chunk);
    for i in 0..n {
        let p = prefixes[(i % 10) as usize];
        let number = PhoneNumber::from_u64(p * 100_000_000 + 10_000_000 + (i * 7919) % 89_999_999).expect("valid");
        let created = Timestamp::from_millis(base + (rnd() % 60_000_000) as i64 * 1000);
        let usage = if rnd() % 10 < 6 { Usage::CallRecording } else { Usage::Whatsapp };
        batch.push(Incoming {
            number,
            usage,
            op: Op::Set {
                consent: rnd() % 10 < 8,
                created_at: Some(created),
                updated_at: Some(created),
            },
        });
        if batch.len() == chunk {
            store.apply(&batch, &ctx, false).expect("apply");
            batch.clear();
        }
    }
    store.apply(&batch, &ctx, false).expect("apply");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store apply: {n} consents in {secs:.2} s = {:.0} consents/s (chunk {chunk}, page {page} B), peak RSS {:.0} MB",
        n as f64 / secs,
        peak_rss_mb()
    );

    let time = |name: &str, c: Criteria| {
        let t = Instant::now();
        let mut count = 0;
        for _ in 0..100 {
            count = store.search(&c, None, 100).expect("search").items.len();
        }
        println!(
            "search {name}: {:.3} ms ({count} results on the first page)",
            t.elapsed().as_secs_f64() * 10.0
        );
    };
    time(
        "by number",
        Criteria {
            number: Some(PhoneNumber::from_u64(491_510_079_190).expect("valid")),
            ..Default::default()
        },
    );
    time(
        "by 4 trailing digits",
        Criteria {
            digits: Some(Digits::parse("4711").expect("digits")),
            ..Default::default()
        },
    );
    time(
        "by 3 trailing digits",
        Criteria {
            digits: Some(Digits::parse("471").expect("digits")),
            ..Default::default()
        },
    );
    let day = Timestamp::from_millis(base + 200 * 86_400_000);
    time(
        "by one creation day",
        Criteria {
            created_from: Some(day),
            created_before: Some(Timestamp::from_millis(day.millis() + 86_400_000)),
            ..Default::default()
        },
    );
    time(
        "by usage and value",
        Criteria {
            usage: Some(Usage::Whatsapp),
            consent: Some(false),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let all = store.scan(&Criteria::default()).expect("scan").count();
    let secs = t.elapsed().as_secs_f64();
    println!("scan all in creation order: {all} in {secs:.2} s = {:.0}/s", all as f64 / secs);
    println!("peak RSS {:.0} MB", peak_rss_mb());
}
