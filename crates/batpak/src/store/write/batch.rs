//! Atomic batches: validation of the items, their ids and causal links, then
//! the shared append core with the batch marking (SPEC §3.9).

use super::durability::InflightGuard;
use super::{Condition, Draft, Failure};
use crate::store::format::payload;
use crate::store::{AppendReceipt, BatchAppendItem, BatchStage, CausationRef, Shared, StoreError};

fn failed(item_index: usize, stage: BatchStage, source: StoreError) -> StoreError {
    StoreError::BatchFailed {
        item_index,
        stage,
        source: Box::new(source),
    }
}

impl Shared {
    /// Append `items` atomically. `reaction` = `(correlation, causation)` for
    /// `append_reaction_batch`: every item's correlation, and the causation
    /// of items whose `CausationRef` is `None`.
    pub(crate) fn append_batch(
        &self,
        mut items: Vec<BatchAppendItem>,
        reaction: Option<(u128, u128)>,
        inflight: InflightGuard<'_>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let limits = &self.config.batch;
        if items.len() > limits.max_size as usize {
            let e = StoreError::BatchLimit {
                limit: "size",
                actual: items.len() as u64,
                max: u64::from(limits.max_size),
            };
            return Err(failed(limits.max_size as usize, BatchStage::Validation, e));
        }
        let mut total = 0u64;
        let mut ids = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            total += item.payload_bytes.len() as u64;
            if total > u64::from(limits.max_bytes) {
                let e = StoreError::BatchLimit {
                    limit: "bytes",
                    actual: total,
                    max: u64::from(limits.max_bytes),
                };
                return Err(failed(i, BatchStage::Validation, e));
            }
            self.validate_event(item.kind, item.payload_bytes.len())
                .map_err(|e| failed(i, BatchStage::Validation, e))?;
            payload::validate(&item.payload_bytes)
                .map_err(|e| failed(i, BatchStage::Encoding, e.into()))?;
            let id = match item.options.idempotency_key {
                Some(key) => {
                    if items[..i]
                        .iter()
                        .any(|o| o.options.idempotency_key == Some(key))
                    {
                        let e = StoreError::InvalidBatch(format!(
                            "idempotency key {key:032x} appears twice"
                        ));
                        return Err(failed(i, BatchStage::Validation, e));
                    }
                    key
                }
                None => crate::id::generate_v7_id(),
            };
            ids.push(id);
        }
        let mut drafts = Vec::with_capacity(items.len());
        for (i, item) in items.iter_mut().enumerate() {
            let payload = std::mem::take(&mut item.payload_bytes);
            let item: &BatchAppendItem = item;
            let causation_id = match item.causation {
                CausationRef::Absolute(id) => Some(id),
                CausationRef::PriorItem(j) if j < i => Some(ids[j]),
                CausationRef::PriorItem(j) => {
                    let e = StoreError::InvalidBatch(format!(
                        "item {i} names item {j} as its cause; only earlier items can be"
                    ));
                    return Err(failed(i, BatchStage::Validation, e));
                }
                CausationRef::None => reaction.map(|r| r.1).or(item.options.causation_id),
            };
            drafts.push(Draft {
                coord: &item.coord,
                kind: item.kind,
                content_hash: crate::store::format::chain::content_hash(&payload),
                payload,
                event_id: ids[i],
                correlation_id: reaction.map(|r| r.0).or(item.options.correlation_id),
                causation_id,
                flags: item.options.flags,
                condition: Condition::from_options(&item.options),
                idempotent: item.options.idempotency_key.is_some(),
            });
        }
        self.append_drafts(&drafts, true, inflight)
            .map_err(Failure::into_batch_error)
    }
}
