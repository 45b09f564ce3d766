//! A consent, where it came from, and the rule that decides what an incoming change does to the one we hold.

use super::{PhoneNumber, Timestamp, Usage};
use std::fmt;
use std::sync::Arc;

/// One consent: identified by number and usage, one per pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Consent {
    pub number: PhoneNumber,
    pub usage: Usage,
    /// TRUE: given; FALSE: denied.
    pub consent: bool,
    /// When it was given or denied.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    pub source: Source,
}

/// Where a consent or a change came from: `ivr`, `agent:<name>`, `import:<mapping>`, `sync:<connector>`, `cli`.
/// Names are shared (`Arc<str>`): the many consents read from one source point at one text, and
/// cloning a source does not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Ivr,
    Agent(Arc<str>),
    Import(Arc<str>),
    Sync(Arc<str>),
    Cli,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?}: expected ivr, cli, agent:<name>, import:<mapping> or sync:<connector>")]
pub struct BadSource(pub String);

impl Source {
    pub fn parse(s: &str) -> Result<Self, BadSource> {
        let named = |rest: &str, f: fn(Arc<str>) -> Source| {
            if rest.is_empty() || rest.len() > 200 || rest.chars().any(char::is_control) {
                Err(BadSource(s.to_string()))
            } else {
                Ok(f(rest.into()))
            }
        };
        match s.split_once(':') {
            None if s == "ivr" => Ok(Source::Ivr),
            None if s == "cli" => Ok(Source::Cli),
            Some(("agent", rest)) => named(rest, Source::Agent),
            Some(("import", rest)) => named(rest, Source::Import),
            Some(("sync", rest)) => named(rest, Source::Sync),
            _ => Err(BadSource(s.to_string())),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ivr => f.write_str("ivr"),
            Source::Cli => f.write_str("cli"),
            Source::Agent(n) => write!(f, "agent:{n}"),
            Source::Import(n) => write!(f, "import:{n}"),
            Source::Sync(n) => write!(f, "sync:{n}"),
        }
    }
}

impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What an incoming change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Set the value; times are the record's own, when it has them.
    Set {
        consent: bool,
        created_at: Option<Timestamp>,
        updated_at: Option<Timestamp>,
    },
    /// Remove the consent (a delete marker); `at` is when the record says it was removed.
    Delete { at: Option<Timestamp> },
    /// Flip the value we hold (the consent view's Change Value).
    Toggle,
}

/// An incoming change to one consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub number: PhoneNumber,
    pub usage: Usage,
    pub op: Op,
}

/// What an incoming change does to the consent we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Insert(Consent),
    Update(Consent),
    Delete,
    /// Nothing to do: same value, nothing to delete, or the incoming record is older than ours.
    Unchanged,
    /// Toggle of a consent we do not hold.
    NotFound,
}

impl Incoming {
    /// The conflict rule. A record older than ours (update time, else creation time; a record without
    /// times counts as `now`) does not overwrite it; the same value changes nothing; a new value is a new
    /// decision, so its creation time is the record's (or now).
    pub fn decide(&self, held: Option<&Consent>, source: &Source, now: Timestamp) -> Decision {
        let make = |consent: bool, created: Timestamp, updated: Timestamp| Consent {
            number: self.number,
            usage: self.usage,
            consent,
            created_at: created,
            updated_at: updated.max(created),
            source: source.clone(),
        };
        match (self.op, held) {
            (
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
                None,
            ) => {
                let created = created_at.or(updated_at).unwrap_or(now);
                Decision::Insert(make(consent, created, updated_at.unwrap_or(created)))
            }
            (
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
                Some(h),
            ) => {
                let at = updated_at.or(created_at).unwrap_or(now);
                if at < h.updated_at || consent == h.consent {
                    Decision::Unchanged
                } else {
                    let created = created_at.unwrap_or(at);
                    Decision::Update(make(consent, created, at))
                }
            }
            (Op::Delete { .. }, None) => Decision::Unchanged,
            (Op::Delete { at }, Some(h)) => {
                if at.unwrap_or(now) < h.updated_at {
                    Decision::Unchanged
                } else {
                    Decision::Delete
                }
            }
            (Op::Toggle, None) => Decision::NotFound,
            (Op::Toggle, Some(h)) => Decision::Update(make(!h.consent, now.max(h.updated_at), now.max(h.updated_at))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn held() -> Consent {
        Consent {
            number: PhoneNumber::parse("+491512345678").unwrap(),
            usage: Usage::Whatsapp,
            consent: true,
            created_at: ts("2024-01-01T00:00:00Z"),
            updated_at: ts("2024-02-01T00:00:00Z"),
            source: Source::Cli,
        }
    }

    fn set(consent: bool, updated: &str) -> Incoming {
        Incoming {
            number: held().number,
            usage: Usage::Whatsapp,
            op: Op::Set {
                consent,
                created_at: None,
                updated_at: Some(ts(updated)),
            },
        }
    }

    #[test]
    fn older_records_do_not_overwrite() {
        let now = ts("2025-01-01T00:00:00Z");
        let src = Source::Import("x".into());
        assert_eq!(
            set(false, "2024-01-15T00:00:00Z").decide(Some(&held()), &src, now),
            Decision::Unchanged
        );
        assert!(matches!(set(false, "2024-02-01T00:00:00Z").decide(Some(&held()), &src, now), Decision::Update(c) if !c.consent));
        assert_eq!(
            set(true, "2024-03-01T00:00:00Z").decide(Some(&held()), &src, now),
            Decision::Unchanged
        );
    }

    #[test]
    fn deletes_and_toggles() {
        let now = ts("2025-01-01T00:00:00Z");
        let d = Incoming {
            number: held().number,
            usage: Usage::Whatsapp,
            op: Op::Delete { at: None },
        };
        assert_eq!(d.decide(Some(&held()), &Source::Cli, now), Decision::Delete);
        assert_eq!(d.decide(None, &Source::Cli, now), Decision::Unchanged);
        let t = Incoming { op: Op::Toggle, ..d };
        assert_eq!(t.decide(None, &Source::Cli, now), Decision::NotFound);
        match t.decide(Some(&held()), &Source::Cli, now) {
            Decision::Update(c) => assert!(!c.consent && c.updated_at == now),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sources_round_trip() {
        for s in ["ivr", "cli", "agent:anna", "import:generic-csv", "sync:crm"] {
            assert_eq!(Source::parse(s).unwrap().to_string(), s);
        }
        assert!(Source::parse("agent:").is_err());
        assert!(Source::parse("robot").is_err());
    }
}
