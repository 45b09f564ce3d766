//! Black-box tests of imports on files as other systems write them (`tests/fixtures/real/`, each
//! with its mapping): numbers read by region, nothing left out without a count, deletions that stay
//! deleted, mappings that say what their users mean, and commands that work anywhere.

mod common;

use common::{fixture, Daemon, Env, BIN};
use serde_json::Value;
use std::process::Command;

fn real(name: &str) -> String {
    fixture(&format!("real/{name}")).to_str().unwrap().to_string()
}

/// The consent of a number and usage in `all`, if held.
fn held<'a>(all: &'a [Value], number: &str, usage: &str) -> Option<&'a Value> {
    all.iter().find(|c| c["number"] == number && c["usage"] == usage)
}

#[test]
fn numbers_are_read_by_the_region_of_the_record_the_command_the_mapping_or_the_config() {
    let env = Env::new();
    // The US log: national US numbers (the mapping's region), a GB number by the record's country,
    // a tel: URI with an extension, a purpose and a status that are not consents of ours.
    let (report, code) = env.import_json(&["--mapping", &real("us-sms-consent-log.toml"), &real("us-sms-consent-log.csv")]);
    assert_eq!(code, 2, "{report}");
    assert_eq!(
        (&report["read"], &report["inserted"], &report["rejected"], &report["skipped"]),
        (&Value::from(8), &Value::from(5), &Value::from(1), &Value::from(2)),
        "{report}"
    );
    assert_eq!(report["rejects"][0]["field"], "number (column msisdn)");
    assert!(report["rejects"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("local number without its area code"));
    let skips: Vec<&str> = report["skips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    assert_eq!(skips, ["marketing_email", "PENDING"]);
    let all = env.all();
    let c = held(&all, "+15125551236", "call_recording").expect("(512) 555-1236 in the US");
    assert_eq!(c["created_at"], "2024-01-02T00:00:00.500Z", "fractional epoch seconds");
    let c = held(&all, "+15125551237", "whatsapp").expect("512-555-1237, no country: the mapping's US");
    assert_eq!(
        (&c["consent"], &c["updated_at"]),
        (&Value::from(false), &Value::from("2024-01-03T00:00:00.250Z"))
    );
    assert!(
        held(&all, "+447911123457", "whatsapp").is_some(),
        "07911 123457 in GB, by its record"
    );
    assert!(
        held(&all, "+15125551240", "call_recording").is_some(),
        "a tel: URI, extension dropped"
    );
    assert!(!all.iter().any(|c| c["number"] == "+5125551236"), "never the Peruvian reading");

    // --region goes over the mapping's region for records without their own.
    let log = env.path("more.csv");
    std::fs::write(&log, "event_id,msisdn,country,purpose,status,opted_in_at,revoked_at\n9,07911 123458,,whatsapp,OPT_IN,1704153600,\n10,0151 2345678,DE,whatsapp,OPT_IN,1704153600,\n").unwrap();
    let (report, code) = env.import_json(&[
        "--mapping",
        &real("us-sms-consent-log.toml"),
        "--region",
        "gb",
        log.to_str().unwrap(),
    ]);
    assert_eq!((code, &report["inserted"]), (0, &Value::from(2)), "{report}");
    let all = env.all();
    assert!(held(&all, "+447911123458", "whatsapp").is_some());
    assert!(held(&all, "+491512345678", "whatsapp").is_some(), "the record's own DE");

    // Without a mapping region, the config's: DE built in, FR in a config of our own, and the old
    // default_country_code read as its main region (with a warning).
    let national = env.path("national.csv");
    std::fs::write(
        &national,
        "phone,channel,consent,created_at,updated_at\n06 12 34 56 78,whatsapp,true,,\n",
    )
    .unwrap();
    let fr = env.path("fr.toml");
    std::fs::write(&fr, "default_region = \"FR\"\n").unwrap();
    let (report, code) = env.import_json(&["--mapping", "generic-csv", national.to_str().unwrap()]);
    assert_eq!((code, &report["inserted"]), (0, &Value::from(1)), "{report}");
    assert!(
        held(&env.all(), "+49612345678", "whatsapp").is_some(),
        "in DE, 06… is a German number"
    );
    let (report, code) = env.import_json(&[
        "--config",
        fr.to_str().unwrap(),
        "--mapping",
        "generic-csv",
        national.to_str().unwrap(),
    ]);
    assert_eq!((code, &report["inserted"]), (0, &Value::from(1)), "{report}");
    assert!(held(&env.all(), "+33612345678", "whatsapp").is_some(), "in FR, a French mobile");
    let us = env.path("us.toml");
    std::fs::write(&us, "default_country_code = 1\n").unwrap();
    let out = env.ok(&["--config", us.to_str().unwrap(), "check-config"]);
    assert!(out.contains("default_region = \"US\""), "{out}");
    let out = env.ok(&["--config", us.to_str().unwrap(), "add", "(512) 555-1299", "--usage", "whatsapp"]);
    assert!(out.starts_with("+15125551299 whatsapp: added"), "{out}");
    let bad = env.path("bad.toml");
    std::fs::write(&bad, "default_region = \"Germany\"\n").unwrap();
    let out = env.run(&["--config", bad.to_str().unwrap(), "search", "--digits", "123"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_region: \"Germany\" is not a region"));
}

#[test]
fn a_record_that_cannot_be_read_is_refused_by_itself_and_reading_goes_on() {
    for (mapping, file, bad_line) in [
        ("generic-csv", "three-records-bad-utf8.csv", 3),
        ("generic-ndjson", "malformed-line.ndjson", 2),
    ] {
        let env = Env::new();
        let rejects = env.path(&format!("{file}.rejects"));
        let (report, code) = env.import_json(&["--mapping", mapping, "--rejects", rejects.to_str().unwrap(), &real(file)]);
        assert_eq!(code, 2, "{report}");
        assert_eq!(
            (&report["read"], &report["inserted"], &report["rejected"], &report["complete"]),
            (&Value::from(3), &Value::from(2), &Value::from(1), &Value::from(true)),
            "{file}: {report}"
        );
        assert_eq!(report["rejects"][0]["line"], bad_line, "{report}");
        // The refused record goes to the rejects as its own bytes, to be fixed and imported again.
        let input = std::fs::read(real(file)).unwrap();
        let line = input.split_inclusive(|b| *b == b'\n').nth(bad_line - 1).unwrap();
        let written = std::fs::read(&rejects).unwrap();
        assert!(written.ends_with(line), "{file}: {}", String::from_utf8_lossy(&written));
        assert!(
            held(&env.all(), "+491511000003", "whatsapp").is_some(),
            "the record after the bad one"
        );
    }
    let env = Env::new();
    // A row with a field too many is refused as such (columns counted from 1), unless flexible.
    let file = env.path("wide-row.csv");
    std::fs::write(
        &file,
        "phone,channel,consent,created_at,updated_at\n+491511000009,whatsapp,true,,,extra\n",
    )
    .unwrap();
    let (report, _) = env.import_json(&["--mapping", "generic-csv", file.to_str().unwrap()]);
    assert!(
        report["rejects"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("the row has 6 fields where the header has 5"),
        "{report}"
    );
}

#[test]
fn where_reading_cannot_go_on_the_rest_is_kept_and_the_import_is_incomplete() {
    let env = Env::new();
    let rejects = env.path("rejects.csv");
    let (report, code) = env.import_json(&[
        "--mapping",
        "generic-csv",
        "--rejects",
        rejects.to_str().unwrap(),
        &real("unclosed-quote.csv"),
    ]);
    assert_eq!(code, 3, "{report}");
    assert_eq!(
        (&report["outcome"], &report["complete"]),
        (&Value::from("partial"), &Value::from(false))
    );
    assert_eq!((&report["read"], &report["inserted"]), (&Value::from(1), &Value::from(1)));
    let unread = &report["unread"][0];
    assert_eq!((&unread["line"], &unread["lines"]), (&Value::from(3), &Value::from(2)), "{report}");
    assert!(unread["reason"].as_str().unwrap().contains("never closed"));
    // The rejects file is the header and the rest as it was: fix the quote and import it again.
    let text = std::fs::read_to_string(&rejects).unwrap();
    let rest: String = std::fs::read_to_string(real("unclosed-quote.csv"))
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(text, format!("phone,channel,consent,created_at,updated_at\n{rest}"));
    std::fs::write(&rejects, text.replacen('"', "", 1)).unwrap();
    let (report, code) = env.import_json(&["--mapping", "generic-csv", rejects.to_str().unwrap()]);
    assert_eq!(
        (code, &report["inserted"], &report["complete"]),
        (0, &Value::from(2), &Value::from(true)),
        "{report}"
    );
    // The text report says it plainly.
    let out = env.run(&["import", "--mapping", "generic-csv", &real("unclosed-quote.csv")]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOT ALL OF THE INPUT WAS READ") && text.contains("2 line(s)"),
        "{text}"
    );

    // JSON: the records before the break are taken; the rest goes beside the rejects.
    let rejects = env.path("rejects.json");
    let (report, code) = env.import_json(&[
        "--mapping",
        "generic-json",
        "--rejects",
        rejects.to_str().unwrap(),
        &real("broken-middle.json"),
    ]);
    assert_eq!((code, &report["complete"]), (3, &Value::from(false)), "{report}");
    let saved = report["unread"][0]["saved_to"].as_str().unwrap();
    assert!(saved.ends_with("rejects.json.unread"), "{report}");
    let rest = std::fs::read_to_string(saved).unwrap();
    assert!(rest.starts_with("{\"phone\": \"+491511000003\""), "{rest}");

    // Over the API the report says the same.
    let d = Daemon::start();
    let body = std::fs::read(real("unclosed-quote.csv")).unwrap();
    let r = d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(body)
        .send()
        .unwrap();
    let report = d.ok(r);
    assert_eq!(
        (&report["outcome"], &report["complete"]),
        (&Value::from("partial"), &Value::from(false)),
        "{report}"
    );
}

#[test]
fn deletions_stay_deleted() {
    let env = Env::new();
    // A Sinch file with a consent and its deletion (no times), twice: the second time changes nothing.
    let file = real("sinch-with-deletion.tsv");
    let (report, _) = env.import_json(&["--mapping", "sinch-contact-pro", &file]);
    assert_eq!(
        (&report["inserted"], &report["deleted"]),
        (&Value::from(2), &Value::from(1)),
        "{report}"
    );
    let history = |env: &Env, n: &str| {
        env.ok(&["history", n, "--json"])
            .parse::<Value>()
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let audited = history(&env, "+491512345678");
    let (report, _) = env.import_json(&["--mapping", "sinch-contact-pro", &file]);
    assert_eq!(
        (&report["inserted"], &report["deleted"], &report["unchanged"]),
        (&Value::from(0), &Value::from(0), &Value::from(3)),
        "{report}"
    );
    assert_eq!(history(&env, "+491512345678"), audited, "no new audit entries");
    assert!(held(&env.all(), "+491512345678", "whatsapp").is_none());

    // Dated records: the deletion first, then an older consent; a late older file; a newer one.
    let mapping = env.path("with-deletes.toml");
    std::fs::write(
        &mapping,
        "[format]\ntype = \"csv\"\n[fields]\nnumber = { column = \"phone\" }\nusage = { column = \"channel\" }\n\
         consent = { column = \"consent\" }\nupdated = { column = \"at\" }\ndelete = { column = \"op\", values = [\"deleted\"] }\n",
    )
    .unwrap();
    let m = mapping.to_str().unwrap();
    let write = |name: &str, rows: &str| {
        let p = env.path(name);
        std::fs::write(&p, format!("phone,channel,consent,at,op\n{rows}")).unwrap();
        p.to_str().unwrap().to_string()
    };
    let first = write(
        "first.csv",
        "+491519999999,whatsapp,,2024-06-01T00:00:00Z,deleted\n+491519999999,whatsapp,true,2024-05-01T00:00:00Z,\n",
    );
    let (report, _) = env.import_json(&["--mapping", m, &first]);
    assert_eq!(report["inserted"], 0, "{report}");
    assert!(held(&env.all(), "+491519999999", "whatsapp").is_none());
    let late = write("late.csv", "+491519999999,whatsapp,true,2024-05-15T00:00:00Z,\n");
    assert_eq!(env.import_json(&["--mapping", m, &late]).0["unchanged"], 1);
    let newer = write("newer.csv", "+491519999999,whatsapp,true,2024-06-02T00:00:00Z,\n");
    assert_eq!(env.import_json(&["--mapping", m, &newer]).0["inserted"], 1);
    // A person deciding now brings a deleted consent back, too.
    env.ok(&["delete", "+491519999999"]);
    let out = env.ok(&["add", "+491519999999", "--usage", "whatsapp"]);
    assert!(out.contains("added"), "{out}");
}

#[test]
fn mappings_say_what_their_users_mean() {
    let env = Env::new();
    // A wide windows-1252 export with +0000 times and a fallback time column.
    let (report, code) = env.import_json(&["--mapping", &real("crm-wide-1252.toml"), &real("crm-wide-1252.csv")]);
    assert_eq!((code, &report["inserted"]), (0, &Value::from(4)), "{report}");
    let all = env.all();
    let c = held(&all, "+491512345678", "call_recording").unwrap();
    assert_eq!(
        (&c["created_at"], &c["updated_at"]),
        (&Value::from("2024-01-01T08:00:00Z"), &Value::from("2024-01-15T10:30:00Z"))
    );
    let c = held(&all, "+491701234567", "call_recording").unwrap();
    assert_eq!(c["updated_at"], "2024-02-01T08:15:00Z", "no change time: the creation time, +0100");
    assert!(held(&all, "+491701234567", "whatsapp").is_none(), "an empty cell is no consent");

    // An opt-out list exports the denied WhatsApp consents only, and says so.
    let out = env.cmd(&["export", "--mapping", &real("opt-out-list.toml")]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text, "number,since\n+491512345678,2024-01-15T10:30:00Z\n",
        "only the denied WhatsApp consent"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("denied consents only, whatsapp only"), "{said}");
    // Asking it for given consents exports nothing, rather than given ones written as opt-outs.
    let out = env
        .cmd(&["export", "--mapping", &real("opt-out-list.toml"), "--consent", "true"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "number,since\n");

    // Numbers as JSON numbers: whole ones are read as their digits, others are refused.
    let (report, code) = env.import_json(&["--mapping", &real("msisdn-ndjson.toml"), &real("msisdn-numbers.ndjson")]);
    assert_eq!(
        (code, &report["inserted"], &report["rejected"]),
        (2, &Value::from(3), &Value::from(2)),
        "{report}"
    );
    for r in report["rejects"].as_array().unwrap() {
        assert!(r["reason"].as_str().unwrap().starts_with("not a string"), "{r}");
    }
    assert!(held(&env.all(), "+4915112345678", "whatsapp").is_some());

    // A namespaced XML export: tel: URIs, a region (or calling code) per subject, Italy's leading 0.
    let (report, code) = env.import_json(&["--mapping", &real("namespaced-xml.toml"), &real("namespaced.xml")]);
    assert_eq!((code, &report["read"]), (0, &Value::from(3)), "{report}");
    let all = env.all();
    assert!(held(&all, "+390612345678", "call_recording").is_some());
    assert!(held(&all, "+33612345678", "whatsapp").is_some());
}

#[test]
fn commands_work_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("CONSENTD_MAPPINGS_DIR")
            .env("CONSENTD_LOG", "warn")
            .env("CONSENTD_DATA_DIR", dir.path().join("data"))
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    std::fs::copy(fixture("generic.csv"), dir.path().join("in.csv")).unwrap();
    let out = run(&["import", "--mapping", "generic-csv", "in.csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["search", "--digits", "7919"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["mapping", "test", "sinch-contact-pro"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 failed"));
    // A connector with a mapping that does not exist stops what needs connectors, and only that.
    std::fs::write(
        dir.path().join("c.toml"),
        "[[connectors]]\nname = \"crm\"\ntransport = \"file\"\ndirection = \"pull\"\nmapping = \"no-such\"\nschedule = \"0 * * * * *\"\n[connectors.file]\ndir = \"in\"\n",
    )
    .unwrap();
    let out = run(&["--config", "c.toml", "search", "--digits", "7919"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["--config", "c.toml", "check-config"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connectors[0].mapping: \"no-such\""));
}
