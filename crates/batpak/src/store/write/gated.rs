//! Committing what passed the policy gates (or bypassed them, on record).
//!
//! The pipeline module never touches the store; these methods are the
//! store-side end of it: a [`Receipt`] becomes an event and a [`Committed`]
//! with the event's real global sequence and hash, and a bypass becomes an
//! event flagged `FLAG_BYPASS` plus an audit record, written atomically.

use crate::coordinate::Coordinate;
use crate::event::{EventKind, FLAG_BYPASS};
use crate::guard::Receipt;
use crate::pipeline::{BypassReceipt, Committed};
use crate::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, CausationRef, Store, StoreError,
};
use serde::{Deserialize, Serialize};

/// The audit record of a bypass: the payload of its `EFFECT_BYPASS` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BypassRecord {
    /// The bypassed event, as 32 hex digits.
    pub event: String,
    /// Its entity.
    pub entity: String,
    /// Its kind (raw code).
    pub kind: u16,
    /// `BypassReason::name()`.
    pub reason: String,
    /// `BypassReason::justification()`.
    pub justification: String,
}

impl Store {
    /// The event hash of a just-appended event, from its frame.
    fn committed_hash(&self, r: &AppendReceipt) -> [u8; 32] {
        self.shared
            .reader()
            .entry_of(r.event_id)
            .map(|e| e.hash_chain.event_hash)
            .unwrap_or_default()
    }

    /// Append the payload of a [`Receipt`] (proof that every gate passed)
    /// and return it as [`Committed`], with the event's id, global sequence
    /// and hash-chain hash.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_committed<T: Serialize>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        receipt: Receipt<T>,
    ) -> Result<Committed<T>, StoreError> {
        let (payload, _gates) = receipt.into_parts();
        let r = self.append(coord, kind, &payload)?;
        Ok(Committed {
            payload,
            event_id: r.event_id,
            sequence: r.sequence,
            hash: self.committed_hash(&r),
        })
    }

    /// Append the payload of a [`BypassReceipt`] flagged `FLAG_BYPASS`,
    /// together with (atomically) its audit record: an `EFFECT_BYPASS`
    /// event on entity `batpak:bypass` in the same scope, caused by it and
    /// carrying the reason and justification. [`Store::bypasses`] lists them.
    ///
    /// # Errors
    /// As [`Store::append_batch`].
    pub fn append_bypassed<T: Serialize>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        receipt: BypassReceipt<T>,
    ) -> Result<Committed<T>, StoreError> {
        let (payload, items) = bypass_batch(coord, kind, receipt)?;
        let receipts = self.append_batch(items)?;
        let r = receipts.first().copied().ok_or(StoreError::WriterCrashed)?;
        Ok(Committed {
            payload,
            event_id: r.event_id,
            sequence: r.sequence,
            hash: self.committed_hash(&r),
        })
    }

    /// Every bypass on record, oldest first.
    ///
    /// # Errors
    /// Read errors of the audit events.
    pub fn bypasses(&self) -> Result<Vec<BypassRecord>, StoreError> {
        self.by_fact(EventKind::EFFECT_BYPASS)
            .iter()
            .map(|e| {
                let ev = self.get(e.event_id)?;
                serde_json::from_value(ev.event.payload).map_err(StoreError::serialization)
            })
            .collect()
    }
}

/// The two items of an audited bypass (see [`Store::append_bypassed`]): the
/// event flagged `FLAG_BYPASS`, then its `EFFECT_BYPASS` audit record on
/// entity `batpak:bypass`, caused by it. Every backend writes these.
pub(crate) fn bypass_batch<T: Serialize>(
    coord: &Coordinate,
    kind: EventKind,
    receipt: BypassReceipt<T>,
) -> Result<(T, Vec<BatchAppendItem>), StoreError> {
    let (reason, justification) = (receipt.reason(), receipt.justification());
    let payload = receipt.into_payload();
    // The id is chosen here so the audit record can name its event.
    let event_id = crate::id::generate_v7_id();
    let event = BatchAppendItem::new(
        coord.clone(),
        kind,
        &payload,
        AppendOptions::new()
            .with_flags(FLAG_BYPASS)
            .with_idempotency(event_id),
        CausationRef::None,
    )?;
    let record = BypassRecord {
        event: format!("{event_id:032x}"),
        entity: coord.entity().to_owned(),
        kind: kind.raw(),
        reason: reason.to_owned(),
        justification: justification.to_owned(),
    };
    let audit = BatchAppendItem::new(
        Coordinate::new("batpak:bypass", coord.scope())?,
        EventKind::EFFECT_BYPASS,
        &record,
        AppendOptions::new(),
        CausationRef::PriorItem(0),
    )?;
    Ok((payload, vec![event, audit]))
}
