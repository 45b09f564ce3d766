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

/// The id of a consent in the API: its usage and number, written so that the number is not spelled
/// out in URLs and logs (`w-` or `r-` and the number in hex). Not a secret: whoever may view the
/// consent sees the number anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsentId {
    pub number: PhoneNumber,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a consent id")]
pub struct BadConsentId(pub String);

impl ConsentId {
    pub fn parse(s: &str) -> Result<Self, BadConsentId> {
        let bad = || BadConsentId(s.chars().take(40).collect());
        let (u, n) = s.split_once('-').ok_or_else(bad)?;
        let usage = match u {
            "r" => Usage::CallRecording,
            "w" => Usage::Whatsapp,
            _ => return Err(bad()),
        };
        let number = u64::from_str_radix(n, 16).ok().and_then(PhoneNumber::from_u64).ok_or_else(bad)?;
        Ok(Self { number, usage })
    }
}

impl fmt::Display for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = match self.usage {
            Usage::CallRecording => 'r',
            Usage::Whatsapp => 'w',
        };
        write!(f, "{u}-{:x}", self.number.as_u64())
    }
}

impl serde::Serialize for ConsentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Consent {
    pub fn id(&self) -> ConsentId {
        ConsentId {
            number: self.number,
            usage: self.usage,
        }
    }
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

/// Who wins when an incoming change meets a consent we hold (a sync connector's `authority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prefer {
    /// The newer update time wins (the conflict rule of [`Incoming::decide`]).
    #[default]
    Newest,
    /// The incoming side wins whatever the times (a remote system that is the authority).
    Theirs,
    /// What we hold stays; incoming changes only add consents we do not hold.
    Ours,
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
    /// When the record says the change happened: its update time, else its creation time (a delete:
    /// its time); `None` when it carries none.
    pub fn time(&self) -> Option<Timestamp> {
        match self.op {
            Op::Set {
                created_at, updated_at, ..
            } => updated_at.or(created_at),
            Op::Delete { at } => at,
            Op::Toggle => None,
        }
    }

    /// The conflict rule. A record older than ours (update time, else creation time; a record without
    /// times counts as `now`) does not overwrite it; the same value changes nothing; a new value is a new
    /// decision, so its creation time is the record's (or now).
    pub fn decide(&self, held: Option<&Consent>, source: &Source, now: Timestamp) -> Decision {
        self.decide_preferring(held, source, now, Prefer::Newest)
    }

    /// [`Incoming::decide`] with another side preferred in a conflict.
    pub fn decide_preferring(&self, held: Option<&Consent>, source: &Source, now: Timestamp, prefer: Prefer) -> Decision {
        match (prefer, held, self.op) {
            (Prefer::Ours, Some(_), Op::Set { .. } | Op::Delete { .. }) => return Decision::Unchanged,
            (
                Prefer::Theirs,
                Some(h),
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
            ) if consent != h.consent => {
                let at = updated_at.or(created_at).unwrap_or(now).max(h.updated_at);
                let created = created_at.unwrap_or(at);
                return Decision::Update(Consent {
                    number: self.number,
                    usage: self.usage,
                    consent,
                    created_at: created,
                    updated_at: at.max(created),
                    source: source.clone(),
                });
            }
            (Prefer::Theirs, Some(_), Op::Delete { .. }) => return Decision::Delete,
            _ => {}
        }
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
    fn a_preferred_side_wins_whatever_the_times() {
        let now = ts("2025-01-01T00:00:00Z");
        let src = Source::Sync("crm".into());
        let older = set(false, "2024-01-15T00:00:00Z");
        assert!(matches!(older.decide_preferring(Some(&held()), &src, now, Prefer::Theirs), Decision::Update(c) if !c.consent));
        let newer = set(false, "2024-06-01T00:00:00Z");
        assert_eq!(newer.decide_preferring(Some(&held()), &src, now, Prefer::Ours), Decision::Unchanged);
        assert!(matches!(
            newer.decide_preferring(None, &src, now, Prefer::Ours),
            Decision::Insert(_)
        ));
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
    fn ids_round_trip_and_hide_the_number() {
        let c = held();
        let id = c.id().to_string();
        assert!(!id.contains("491512345678"), "{id}");
        assert_eq!(ConsentId::parse(&id), Ok(c.id()));
        for bad in ["", "w-", "x-1", "w-zz", "w-1"] {
            assert!(ConsentId::parse(bad).is_err(), "{bad}");
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
