//! What reading a phone number costs, per shape: numbers with `+` take a fast path checked against
//! libphonenumber's metadata; every other shape goes through libphonenumber's full parse
//! (rlibphonenumber). Prints nanoseconds per number; asserts nothing. `cargo bench --bench numbers`.

use consentd::domain::{PhoneParser, Region};
use std::time::Instant;

fn main() {
    let de = PhoneParser::new(Some(Region::parse("DE").expect("DE")));
    let us = de.with_region(Region::parse("US").expect("US"));
    let it = de.with_region(Region::parse("IT").expect("IT"));
    // Each shape with a template whose last 6 digits vary, so no two numbers are alike.
    let shapes: [(&str, &PhoneParser, &str); 11] = [
        ("E.164 (+491510…)", &de, "+4915100{}"),
        ("E.164 with spaces (+49 151 0…)", &de, "+49 151 0{}"),
        ("E.164, North America (+1 5125…)", &de, "+15125{}"),
        ("national DE (0151 0…)", &de, "0151 0{}"),
        ("national US ((512) 5…)", &us, "(512) 5{}"),
        ("national IT fixed line (06 1…)", &it, "06 1{}"),
        ("+49 (0)151 0…", &de, "+49 (0)151 0{}"),
        ("0049 151 0…", &de, "0049 151 0{}"),
        ("tel:+49-151-0…", &de, "tel:+49-151-0{}"),
        ("+39 06 1… (Italy's leading 0)", &de, "+39 06 1{}"),
        ("refused: too long (+1 212 1…)", &de, "+1 212 10{}"),
    ];
    let n = 200_000u32;
    // The first number loads libphonenumber's metadata (a few ms, once per process).
    let t = Instant::now();
    let _ = de.parse("+491510000000");
    let _ = de.parse("0151 0000000");
    println!("{:<36} {:>9.1} ms (once)", "loading the metadata", t.elapsed().as_secs_f64() * 1e3);
    for (name, parser, template) in shapes {
        let inputs: Vec<String> = (0..n).map(|i| template.replace("{}", &format!("{:06}", i % 1_000_000))).collect();
        let mut best = f64::MAX;
        let mut ok = 0;
        for _ in 0..3 {
            ok = 0;
            let t = Instant::now();
            for s in &inputs {
                ok += usize::from(parser.parse(s).is_ok());
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(n));
        }
        println!("{name:<36} {best:>9.0} ns per number  ({ok} of {n} taken)");
    }
}
