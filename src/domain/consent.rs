//! A consent, where it came from, and the rule that decides what an incoming change does to the one we hold.

use super::{PhoneNumber, Timestamp, Usage};
use std::fmt;
use std::sync::Arc;

/// One consent: identified by number and usage, one per pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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
        // One spelling only: the lower-case hex the API gives out (no `+`, no upper case, no zeros in
        // front), so one consent has one id in URLs and access logs.
        let canonical = !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical {
            return Err(bad());
        }
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

/// What we hold for a number and usage when a change arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held<'a> {
    /// Nothing: never held, or purged.
    Nothing,
    Consent(&'a Consent),
    /// A tombstone: the consent was deleted at this time. An older record does not bring it back.
    Deleted(Timestamp),
}

/// What an incoming change does to the consent we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Insert(Consent),
    Update(Consent),
    /// Remove the consent we hold, leaving a tombstone at `at`.
    Delete {
        at: Timestamp,
    },
    /// No consent changes, but a deletion is recorded: a tombstone at `at` where we held nothing, or a
    /// tombstone moved to a later deletion.
    Tombstone {
        at: Timestamp,
    },
    /// Nothing to do: same value, nothing to delete, or the incoming record is older than ours (or
    /// than its deletion).
    Unchanged,
    /// Toggle of a consent we do not hold.
    NotFound,
}

impl Op {
    /// A value decided at `now` by someone acting now (an agent, the IVR, the command line). Unlike a
    /// record without times it is dated, so it also undoes an earlier deletion.
    pub fn decided(consent: bool, now: Timestamp) -> Op {
        Op::Set {
            consent,
            created_at: Some(now),
            updated_at: Some(now),
        }
    }
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

    /// The conflict rule.
    /// - Against a consent we hold: a record older than ours (its update time, else its creation time;
    ///   a record without times counts as `now`) does not overwrite it; the same value changes nothing;
    ///   a new value is a new decision, so its creation time is the record's (or now). A delete marker
    ///   removes the consent unless ours is newer.
    /// - Against a tombstone (a deleted consent): only a record dated after the deletion brings the
    ///   consent back; an older one, one at the same time, or one without times changes nothing, so
    ///   re-reading a file that holds a consent and its deletion, in either order, changes nothing.
    /// - A deletion leaves a tombstone: where it removes a consent, and where we held nothing when the
    ///   deletion carries its time (a file may hold a deletion before the consent it removes).
    pub fn decide(&self, held: Held<'_>, source: &Source, now: Timestamp) -> Decision {
        self.decide_preferring(held, source, now, Prefer::Newest)
    }

    /// [`Incoming::decide`] with another side preferred in a conflict.
    pub fn decide_preferring(&self, held: Held<'_>, source: &Source, now: Timestamp, prefer: Prefer) -> Decision {
        let make = |consent: bool, created: Timestamp, updated: Timestamp| Consent {
            number: self.number,
            usage: self.usage,
            consent,
            created_at: created,
            updated_at: updated.max(created),
            source: source.clone(),
        };
        let insert = |consent: bool, created_at: Option<Timestamp>, updated_at: Option<Timestamp>| {
            let created = created_at.or(updated_at).unwrap_or(now);
            Decision::Insert(make(consent, created, updated_at.unwrap_or(created)))
        };
        match (prefer, held, self.op) {
            (Prefer::Ours, Held::Consent(_) | Held::Deleted(_), Op::Set { .. } | Op::Delete { .. }) => return Decision::Unchanged,
            (
                Prefer::Theirs,
                Held::Consent(h),
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
            ) if consent != h.consent => {
                let at = updated_at.or(created_at).unwrap_or(now).max(h.updated_at);
                return Decision::Update(make(consent, created_at.unwrap_or(at), at));
            }
            (Prefer::Theirs, Held::Consent(_), Op::Delete { at }) => return Decision::Delete { at: at.unwrap_or(now) },
            (
                Prefer::Theirs,
                Held::Deleted(_),
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
            ) => return insert(consent, created_at, updated_at),
            _ => {}
        }
        match (self.op, held) {
            (
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
                Held::Nothing,
            ) => insert(consent, created_at, updated_at),
            (
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
                Held::Consent(h),
            ) => {
                let at = updated_at.or(created_at).unwrap_or(now);
                if at < h.updated_at || consent == h.consent {
                    Decision::Unchanged
                } else {
                    Decision::Update(make(consent, created_at.unwrap_or(at), at))
                }
            }
            (
                Op::Set {
                    consent,
                    created_at,
                    updated_at,
                },
                Held::Deleted(deleted),
            ) => match updated_at.or(created_at) {
                Some(at) if at > deleted => insert(consent, created_at, updated_at),
                _ => Decision::Unchanged,
            },
            // A dated deletion is remembered even where we held nothing: a file may hold the deletion
            // before the consent it removes. Without a time there is nothing to compare a later record with.
            (Op::Delete { at: Some(at) }, Held::Nothing) => Decision::Tombstone { at },
            (Op::Delete { at: None }, Held::Nothing) => Decision::Unchanged,
            (Op::Delete { at }, Held::Consent(h)) => {
                let at = at.unwrap_or(now);
                if at < h.updated_at {
                    Decision::Unchanged
                } else {
                    Decision::Delete { at }
                }
            }
            (Op::Delete { at: Some(at) }, Held::Deleted(deleted)) if at > deleted => Decision::Tombstone { at },
            (Op::Delete { .. }, Held::Deleted(_)) => Decision::Unchanged,
            (Op::Toggle, Held::Nothing | Held::Deleted(_)) => Decision::NotFound,
            (Op::Toggle, Held::Consent(h)) => {
                let at = now.max(h.updated_at);
                Decision::Update(make(!h.consent, at, at))
            }
        }
    }
}

string_schema!(ConsentId, "a consent id, as the API gives it");

string_schema!(Source, "ivr, cli, agent:NAME, import:MAPPING or sync:CONNECTOR");

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

    fn now() -> Timestamp {
        ts("2025-01-01T00:00:00Z")
    }

    fn import() -> Source {
        Source::Import("x".into())
    }

    fn op(op: Op) -> Incoming {
        Incoming {
            number: held().number,
            usage: Usage::Whatsapp,
            op,
        }
    }

    fn dated(consent: bool, created: Option<&str>, updated: Option<&str>) -> Incoming {
        op(Op::Set {
            consent,
            created_at: created.map(ts),
            updated_at: updated.map(ts),
        })
    }

    fn delete(at: Option<&str>) -> Incoming {
        op(Op::Delete { at: at.map(ts) })
    }

    /// The consent a decision writes, or a panic.
    fn written(d: Decision) -> Consent {
        match d {
            Decision::Insert(c) | Decision::Update(c) => c,
            other => panic!("expected a consent, got {other:?}"),
        }
    }

    #[test]
    fn a_record_without_times_counts_as_now() {
        let h = held();
        // Against what we hold: a new value now (our update time is older), at now.
        let c = written(dated(false, None, None).decide(Held::Consent(&h), &import(), now()));
        assert_eq!((c.consent, c.created_at, c.updated_at), (false, now(), now()));
        // Where we hold nothing: inserted as created now.
        let c = written(dated(true, None, None).decide(Held::Nothing, &import(), now()));
        assert_eq!((c.created_at, c.updated_at), (now(), now()));
        // A consent of ours dated after now (another system's clock) is newer than "now".
        let future = Consent {
            updated_at: ts("2026-01-01T00:00:00Z"),
            ..held()
        };
        assert_eq!(
            dated(false, None, None).decide(Held::Consent(&future), &import(), now()),
            Decision::Unchanged
        );
    }

    #[test]
    fn the_update_time_else_the_creation_time_decides() {
        let h = held(); // updated 2024-02-01
                        // An update time older than ours loses, even with a newer creation time...
        assert_eq!(
            dated(false, Some("2024-03-01T00:00:00Z"), Some("2024-01-15T00:00:00Z")).decide(Held::Consent(&h), &import(), now()),
            Decision::Unchanged
        );
        // ...and a newer update time wins, whatever the creation time.
        assert!(
            !written(dated(false, Some("2023-01-01T00:00:00Z"), Some("2024-03-01T00:00:00Z")).decide(Held::Consent(&h), &import(), now()))
                .consent
        );
        // Without an update time, the creation time decides.
        assert_eq!(
            dated(false, Some("2024-01-15T00:00:00Z"), None).decide(Held::Consent(&h), &import(), now()),
            Decision::Unchanged
        );
        assert!(!written(dated(false, Some("2024-03-01T00:00:00Z"), None).decide(Held::Consent(&h), &import(), now())).consent);
        // The same time as ours: the incoming value wins; the same value changes nothing.
        assert!(!written(dated(false, None, Some("2024-02-01T00:00:00Z")).decide(Held::Consent(&h), &import(), now())).consent);
        assert_eq!(
            dated(true, None, Some("2024-06-01T00:00:00Z")).decide(Held::Consent(&h), &import(), now()),
            Decision::Unchanged
        );
    }

    #[test]
    fn a_new_value_takes_the_records_creation_time() {
        let h = held(); // created 2024-01-01, given
        let c =
            written(dated(false, Some("2024-05-01T00:00:00Z"), Some("2024-05-02T00:00:00Z")).decide(Held::Consent(&h), &import(), now()));
        assert_eq!(c.created_at, ts("2024-05-01T00:00:00Z"));
        assert_eq!(c.updated_at, ts("2024-05-02T00:00:00Z"));
        assert_eq!(c.source, import());
        // Without a creation time, the new decision was made at its update time.
        let c = written(dated(false, None, Some("2024-05-02T00:00:00Z")).decide(Held::Consent(&h), &import(), now()));
        assert_eq!(c.created_at, ts("2024-05-02T00:00:00Z"));
    }

    #[test]
    fn a_delete_marker_loses_to_a_newer_consent() {
        let h = held(); // updated 2024-02-01
        assert_eq!(
            delete(Some("2024-01-15T00:00:00Z")).decide(Held::Consent(&h), &import(), now()),
            Decision::Unchanged
        );
        assert_eq!(
            delete(Some("2024-03-01T00:00:00Z")).decide(Held::Consent(&h), &import(), now()),
            Decision::Delete {
                at: ts("2024-03-01T00:00:00Z")
            }
        );
        // Without a time it is a deletion now.
        assert_eq!(
            delete(None).decide(Held::Consent(&h), &import(), now()),
            Decision::Delete { at: now() }
        );
    }

    #[test]
    fn a_tombstone_beats_an_older_record() {
        let deleted = Held::Deleted(ts("2024-06-01T00:00:00Z"));
        // Older, at the same time, or without times: the deletion stays.
        for record in [
            dated(true, Some("2024-01-01T00:00:00Z"), Some("2024-05-31T00:00:00Z")),
            dated(true, None, Some("2024-06-01T00:00:00Z")),
            dated(true, Some("2024-05-01T00:00:00Z"), None),
            dated(true, None, None),
        ] {
            assert_eq!(record.decide(deleted, &import(), now()), Decision::Unchanged, "{record:?}");
        }
        // A record dated after the deletion is a new decision.
        let c = written(dated(true, Some("2024-06-02T00:00:00Z"), None).decide(deleted, &import(), now()));
        assert_eq!(c.created_at, ts("2024-06-02T00:00:00Z"));
        // A person deciding now undoes it too.
        assert!(written(op(Op::decided(true, now())).decide(deleted, &Source::Cli, now())).consent);
        // A later deletion moves the tombstone; an earlier or undated one changes nothing.
        assert_eq!(
            delete(Some("2024-07-01T00:00:00Z")).decide(deleted, &import(), now()),
            Decision::Tombstone {
                at: ts("2024-07-01T00:00:00Z")
            }
        );
        assert_eq!(
            delete(Some("2024-05-01T00:00:00Z")).decide(deleted, &import(), now()),
            Decision::Unchanged
        );
        assert_eq!(delete(None).decide(deleted, &import(), now()), Decision::Unchanged);
        // Toggling a deleted consent finds nothing.
        assert_eq!(op(Op::Toggle).decide(deleted, &import(), now()), Decision::NotFound);
    }

    #[test]
    fn a_deletion_of_nothing_leaves_a_tombstone() {
        assert_eq!(
            delete(Some("2024-06-01T00:00:00Z")).decide(Held::Nothing, &import(), now()),
            Decision::Tombstone {
                at: ts("2024-06-01T00:00:00Z")
            }
        );
        // Without a time (a person deleting what is not there) nothing is recorded.
        assert_eq!(delete(None).decide(Held::Nothing, &import(), now()), Decision::Unchanged);
    }

    #[test]
    fn a_preferred_side_wins_whatever_the_times() {
        let h = held();
        let src = Source::Sync("crm".into());
        let older = dated(false, None, Some("2024-01-15T00:00:00Z"));
        assert!(!written(older.decide_preferring(Held::Consent(&h), &src, now(), Prefer::Theirs)).consent);
        assert_eq!(
            delete(Some("2024-01-15T00:00:00Z")).decide_preferring(Held::Consent(&h), &src, now(), Prefer::Theirs),
            Decision::Delete {
                at: ts("2024-01-15T00:00:00Z")
            }
        );
        // The remote as authority brings back what we deleted later; we as authority keep it deleted.
        let deleted = Held::Deleted(ts("2024-06-01T00:00:00Z"));
        assert!(matches!(
            older.decide_preferring(deleted, &src, now(), Prefer::Theirs),
            Decision::Insert(_)
        ));
        assert_eq!(
            dated(true, None, Some("2024-07-01T00:00:00Z")).decide_preferring(deleted, &src, now(), Prefer::Ours),
            Decision::Unchanged
        );
        let newer = dated(false, None, Some("2024-06-01T00:00:00Z"));
        assert_eq!(
            newer.decide_preferring(Held::Consent(&h), &src, now(), Prefer::Ours),
            Decision::Unchanged
        );
        assert!(matches!(
            newer.decide_preferring(Held::Nothing, &src, now(), Prefer::Ours),
            Decision::Insert(_)
        ));
    }

    #[test]
    fn toggles() {
        let h = held();
        let t = op(Op::Toggle);
        assert_eq!(t.decide(Held::Nothing, &Source::Cli, now()), Decision::NotFound);
        let c = written(t.decide(Held::Consent(&h), &Source::Cli, now()));
        assert!(!c.consent && c.updated_at == now() && c.created_at == now());
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
        // One spelling: other spellings of the same hex are refused.
        let hex = id.trim_start_matches("w-").trim_start_matches("r-");
        let usage = &id[..2];
        for other in [
            format!("{usage}{}", hex.to_uppercase()),
            format!("{usage}+{hex}"),
            format!("{usage}0{hex}"),
        ] {
            if other != id {
                assert!(ConsentId::parse(&other).is_err(), "{other}");
            }
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
