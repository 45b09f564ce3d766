//! What an admin does to a connector by hand, each audited as an event: re-send refused changes
//! after a fix, or dismiss them; mark an erasure handled outside consentd; set or clear the pull
//! watermark and the push position.

use super::run::{Refusal, RefusedBatch};
use super::{ErasureStatus, Sync, SyncError};
use crate::connectors::http::HttpConnector;
use crate::domain::Timestamp;
use serde::Serialize;
use serde_json::json;

/// What a re-send came to.
#[derive(Debug, Clone, Serialize)]
pub struct Resent {
    pub id: u64,
    /// `delivered` (the remote took every change; the batch is gone), `refused` (some were refused
    /// again; the batch is kept with the new answer), or `superseded` (every change has a later one,
    /// already pushed or to be pushed: nothing was sent; the batch is gone).
    pub outcome: String,
    pub sent: u64,
    pub refused: u64,
    /// Changes left out because a later change of the same consent exists.
    pub superseded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// Where a connector stands, as `sync reset` and `POST /v1/sync/NAME/watermark` set it.
#[derive(Debug, Clone, Default)]
pub struct Position {
    /// `Some(None)` clears the watermark (the next pull takes everything, or from `start_from`);
    /// `Some(Some(t))` sets it; `None` leaves it.
    pub watermark: Option<Option<String>>,
    /// The last change counted as pushed; the next push sends the changes after it.
    pub pushed_seq: Option<u64>,
}

impl Sync {
    /// Sends a refused batch's changes again (after the remote or the mapping was fixed). Changes
    /// that a later change of the same consent supersedes are left out (the later one is, or will be,
    /// pushed). Fails when the remote is misconfigured or down, as a run would.
    pub fn resend_refused(&self, name: &str, id: u64, actor: &str) -> Result<Resent, SyncError> {
        let c = self.connector(name)?;
        let opts = c
            .cfg
            .http
            .as_ref()
            .ok_or_else(|| SyncError::Invalid(format!("connector {name:?} does not push over HTTP")))?;
        let _held = self.hold(name, "resend")?;
        let key = id.to_be_bytes();
        let mut batch: RefusedBatch = self
            .store
            .sync_get(name, "refused", &key)?
            .ok_or_else(|| SyncError::NotFound(format!("connector {name:?} has no refused batch {id}")))?;
        let span = (batch.last_seq - batch.first_seq + 1).min(usize::MAX as u64) as usize;
        let mut changes = self.store.changes_since(batch.first_seq.saturating_sub(1), span)?;
        changes.retain(|e| e.seq <= batch.last_seq && !c.own.contains(&e.source));
        let mut records = Vec::new();
        let mut superseded = 0;
        for e in &changes {
            let later = self.store.history(e.number)?.iter().any(|h| h.usage == e.usage && h.seq > e.seq);
            if later {
                superseded += 1;
            } else {
                records.push((e.seq, super::run::outgoing(e)));
            }
        }
        let mut out = Resent {
            id,
            outcome: "superseded".into(),
            sent: records.len() as u64,
            refused: 0,
            superseded,
            status: None,
            response: None,
        };
        let refusals: Vec<Refusal> = if records.is_empty() {
            Vec::new()
        } else {
            let http = HttpConnector::new(opts).map_err(|e| SyncError::Failed(e.to_string()))?;
            // A key of its own: a remote that keeps answers by key would answer the old refusal.
            let keys = format!("{}-resend{id}.{}", self.key_base(&c).map_err(SyncError::Failed)?, batch.resends + 1);
            match self.send(&c, &http, &records, &keys) {
                Ok(r) => r,
                Err(e) => {
                    self.store
                        .record_event(actor, "sync_resend", name, json!({"batch": id, "outcome": "failed"}))?;
                    return Err(SyncError::Failed(e));
                }
            }
        };
        if refusals.is_empty() {
            if !records.is_empty() {
                out.outcome = "delivered".into();
            }
            self.store.sync_remove(name, "refused", &key)?;
        } else {
            out.outcome = "refused".into();
            out.refused = refusals.iter().map(|r| r.records).sum();
            out.status = Some(refusals[0].status);
            out.response = Some(refusals[0].body.clone());
            batch.resends += 1;
            batch.at = Timestamp::now().to_rfc3339();
            batch.status = refusals[0].status;
            batch.response = refusals[0].body.clone();
            self.store.sync_put(name, "refused", &key, &batch)?;
        }
        self.store.record_event(
            actor,
            "sync_resend",
            name,
            json!({"batch": id, "outcome": out.outcome, "sent": out.sent, "refused": out.refused, "superseded": out.superseded, "status": out.status}),
        )?;
        tracing::info!(connector = %name, batch = id, outcome = %out.outcome, sent = out.sent, refused = out.refused, "Refused changes were sent again.");
        Ok(out)
    }

    /// Drops a refused batch: its changes will not be sent (an admin decided so, with a note).
    pub fn dismiss_refused(&self, name: &str, id: u64, actor: &str, note: Option<&str>) -> Result<RefusedBatch, SyncError> {
        self.connector(name)?;
        let key = id.to_be_bytes();
        let batch: RefusedBatch = self
            .store
            .sync_get(name, "refused", &key)?
            .ok_or_else(|| SyncError::NotFound(format!("connector {name:?} has no refused batch {id}")))?;
        self.store.sync_remove(name, "refused", &key)?;
        self.store.record_event(
            actor,
            "sync_dismiss",
            name,
            json!({"batch": id, "first_seq": batch.first_seq, "last_seq": batch.last_seq, "records": batch.records, "note": note}),
        )?;
        tracing::info!(connector = %name, batch = id, "A refused batch was dismissed.");
        Ok(batch)
    }

    /// Marks an erasure (by the number's keyed hash) as handled outside consentd: it is no longer
    /// sent, and the DPO report shows who marked it, when, and their note.
    pub fn erasure_handled(&self, name: &str, id: &str, actor: &str, note: &str) -> Result<ErasureStatus, SyncError> {
        self.connector(name)?;
        if note.trim().is_empty() {
            return Err(SyncError::Invalid("a note is needed: how was the erasure handled?".into()));
        }
        let _held = self.hold(name, "erasure_handled")?;
        let e: super::Erasure = self
            .store
            .sync_get(name, "erase", id.as_bytes())?
            .ok_or_else(|| SyncError::NotFound(format!("connector {name:?} owes no erasure {id}")))?;
        let done = ErasureStatus {
            status: "handled".into(),
            at: Timestamp::now().to_rfc3339(),
            attempts: e.attempts,
            by: Some(actor.to_string()),
            note: Some(note.to_string()),
        };
        self.store.sync_put(name, "erased", id.as_bytes(), &done)?;
        self.store.sync_remove(name, "erase", id.as_bytes())?;
        self.release_seal(id)?;
        self.store.record_event(
            actor,
            "erasure_handled",
            name,
            json!({"erasure": id, "attempts": e.attempts, "note": note}),
        )?;
        tracing::info!(connector = %name, "An erasure was marked handled by hand.");
        Ok(done)
    }

    /// Sets or clears where a connector stands (not while it runs).
    pub fn set_position(&self, name: &str, to: &Position, actor: &str) -> Result<super::ConnectorState, SyncError> {
        self.connector(name)?;
        let watermark = match &to.watermark {
            Some(Some(t)) => Some(Some(
                Timestamp::parse_rfc3339(t)
                    .map_err(|e| SyncError::Invalid(format!("watermark: {t:?} is not an RFC 3339 time ({e})")))?
                    .to_rfc3339(),
            )),
            other => other.clone(),
        };
        if let Some(seq) = to.pushed_seq {
            let last = self.store.last_change()?;
            if seq > last {
                return Err(SyncError::Invalid(format!("pushed_seq: {seq} is past the latest change ({last})")));
            }
        }
        if watermark.is_none() && to.pushed_seq.is_none() {
            return Err(SyncError::Invalid(
                "give a watermark (a time, or null to clear it) or a pushed_seq".into(),
            ));
        }
        let _held = self.hold(name, "position")?;
        let mut state = self.state(name)?;
        let before = json!({"watermark": state.watermark, "pushed_seq": state.pushed_seq});
        if let Some(w) = watermark {
            state.watermark = w;
        }
        if let Some(seq) = to.pushed_seq {
            state.pushed_seq = seq;
            state.in_flight = None;
        }
        self.save_state(name, &state).map_err(SyncError::Failed)?;
        let after = json!({"watermark": state.watermark, "pushed_seq": state.pushed_seq});
        self.store
            .record_event(actor, "sync_position", name, json!({"before": before, "after": after}))?;
        tracing::info!(connector = %name, "A connector's position was set by hand.");
        Ok(state)
    }
}
