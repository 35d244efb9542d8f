//! Fencing: which leadership epoch owns this database ([`Fence`]).
//!
//! The epoch is one value in the meta keyspace (`layout::META_EPOCH`). It never goes down: a
//! leader claims the database when it wins ([`Fence::take_over`]), and every sync write checks
//! it in its own transaction ([`Fence::check_epoch`]), so a deposed leader's commits are refused
//! (DESIGN invariant 9).

use crate::error::{Error, ErrorKind, Result};
use crate::store::{ReadTxn, WriteTxn};

use super::{LocalDb, layout, read_u64};

/// The leadership fence of a [`LocalDb`]: claims and checks the epoch that may write sync
/// state. Borrowed from [`LocalDb::fence`]; its methods act on the caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub(super) db: &'a LocalDb,
}

impl Fence<'_> {
    /// Records that leadership `epoch` now owns this database (never lowers the stored epoch).
    /// Fails with [`ErrorKind::Fenced`] if a newer leader already claimed it.
    pub(super) fn claim_epoch(&self, txn: &mut dyn WriteTxn, epoch: u64) -> Result<()> {
        self.check_epoch(&*txn, Some(epoch))?;
        txn.put(layout::META, layout::META_EPOCH, &epoch.to_be_bytes())?;
        self.db.persist_clock(txn)
    }

    /// What a leader does when it wins `epoch`, in one transaction: claims the database
    /// (`claim_epoch`) and puts back in the queue the entries left in flight. When
    /// another epoch held the database before (a new leader after another one, or after this
    /// process restarted under a new epoch), they are held until `hold_until_ms`
    /// ([`Outbox::reset_in_flight_held`](super::Outbox::reset_in_flight_held)): the previous leader's requests may still land. The
    /// same epoch again (an always-leader election after a restart) re-queues them at once.
    /// Returns how many were re-queued.
    pub fn take_over(
        &self,
        txn: &mut dyn WriteTxn,
        epoch: u64,
        hold_until_ms: u64,
    ) -> Result<usize> {
        let previous = match txn.get(layout::META, layout::META_EPOCH)? {
            Some(bytes) => Some(read_u64(&bytes)?),
            None => None,
        };
        self.claim_epoch(txn, epoch)?;
        let hold = previous
            .is_some_and(|p| p != epoch)
            .then_some(hold_until_ms);
        self.db.outbox().reset_in_flight_held(txn, hold)
    }

    /// Refuses a sync write made under `epoch` when a newer leader has claimed the database
    /// (DESIGN invariant 9: a deposed leader's commits are refused). `None` (no election in
    /// use) always passes.
    pub fn check_epoch(&self, txn: &dyn ReadTxn, epoch: Option<u64>) -> Result<()> {
        let Some(epoch) = epoch else { return Ok(()) };
        if let Some(bytes) = txn.get(layout::META, layout::META_EPOCH)? {
            let current = read_u64(&bytes)?;
            if current > epoch {
                return Err(Error::new(
                    ErrorKind::Fenced,
                    format!("leadership epoch {epoch} was superseded by epoch {current}"),
                ));
            }
        }
        Ok(())
    }
}
