//! Work shared among processes: which partitions of a stream this process works on for a
//! group of workers (the webhook workers, say), and the hand-over when that changes.
//!
//! On the embedded log one process owns the data directory, so it owns every partition,
//! always. On a remote log (Kafka) every process running the same group joins one Kafka
//! consumer group for it; the cluster divides the partitions among the members and moves
//! them when a member joins, leaves or stops answering (`Remote::join`).
//!
//! The hand-over: a worker takes a [`Lease`] on a partition before working on it and holds
//! it until its progress is committed and it has stopped. When the partition is taken away,
//! the lease says so (`Lease::revoked`) and the revocation waits, bounded by
//! `SHARE_HANDOVER_MS`, until every lease on it is dropped. Only then does the remote hand the
//! partition to another process, which starts from the committed position. So a partition
//! has one worker at a time unless a worker outlives the bound (it is logged, and what it then
//! repeats is repeated at least once, never lost).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::limits::SHARE_HANDOVER_MS;

/// A remote's membership of one group: dropping it, or `leave`, takes this process out.
pub trait Membership: Send + Sync {
    /// Leaves the group (its partitions are revoked here first, then handed to others).
    /// Blocking; bounded by the remote's timeouts and the hand-over bound.
    fn leave(&self);
}

/// This process's share of a group's work on one stream.
pub struct Share {
    state: Arc<ShareState>,
    version: watch::Receiver<u64>,
    membership: Option<Box<dyn Membership>>,
}

/// What a remote's membership uses to tell the share what the cluster decided.
#[derive(Clone)]
pub struct ShareHandle {
    state: Arc<ShareState>,
}

/// A worker's hold on one partition: while it lives the partition is not handed over.
pub struct Lease {
    partition: u32,
    slot: Arc<Slot>,
    owned: watch::Receiver<bool>,
    /// `Slot::lost` when the lease was taken.
    lost_at_start: u64,
}

/// Whether work done under a lease may still be made visible: false once the partition was
/// *lost* (this process was put out of the group, say after missing its session, and another
/// may already work on it), as opposed to revoked in an orderly hand-over, which waits for
/// the lease. Checked right before publishing results.
#[derive(Clone)]
pub struct Fence {
    slot: Arc<Slot>,
    lost_at_start: u64,
}

struct ShareState {
    group: String,
    stream: String,
    slots: BTreeMap<u32, Arc<Slot>>,
    version: watch::Sender<u64>,
    metrics: ShareMetrics,
}

struct Slot {
    held: Mutex<SlotState>,
    released: Condvar,
    owned: watch::Sender<bool>,
    /// How many times the partition was lost here.
    lost: std::sync::atomic::AtomicU64,
}

struct SlotState {
    owned: bool,
    leases: usize,
}

impl Slot {
    /// Sets whether this process owns the partition, in the lease state and for the leases'
    /// watchers; answers whether it changed.
    fn set_owned(&self, owned: bool) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.owned == owned {
            return false;
        }
        held.owned = owned;
        self.owned.send_replace(owned);
        true
    }
}

struct ShareMetrics {
    owned: metrics::Gauge,
    assigned: metrics::Counter,
    revoked: metrics::Counter,
    lost: metrics::Counter,
    handover_seconds: metrics::Histogram,
    handover_overdue: metrics::Counter,
}

impl Share {
    /// A share with no partition owned yet, and the handle that changes it.
    pub(crate) fn new(group: &str, stream: &str, partitions: u32) -> (Share, ShareHandle) {
        let labels = [("group", group.to_string()), ("stream", stream.to_string())];
        let slots = (0..partitions)
            .map(|partition| {
                let slot = Slot {
                    held: Mutex::new(SlotState { owned: false, leases: 0 }),
                    released: Condvar::new(),
                    owned: watch::channel(false).0,
                    lost: std::sync::atomic::AtomicU64::new(0),
                };
                (partition, Arc::new(slot))
            })
            .collect();
        let (version, receiver) = watch::channel(0);
        let state = Arc::new(ShareState {
            group: group.to_string(),
            stream: stream.to_string(),
            slots,
            version,
            metrics: ShareMetrics {
                owned: metrics::gauge!("strom_share_partitions_owned", &labels),
                assigned: metrics::counter!("strom_share_partitions_assigned_total", &labels),
                revoked: metrics::counter!("strom_share_partitions_revoked_total", &labels),
                lost: metrics::counter!("strom_share_partitions_lost_total", &labels),
                handover_seconds: metrics::histogram!("strom_share_handover_seconds", &labels),
                handover_overdue: metrics::counter!("strom_share_handover_overdue_total", &labels),
            },
        });
        (Share { state: state.clone(), version: receiver, membership: None }, ShareHandle { state })
    }

    pub(crate) fn set_membership(&mut self, membership: Box<dyn Membership>) {
        self.membership = Some(membership);
    }

    pub fn group(&self) -> &str {
        &self.state.group
    }

    pub fn stream(&self) -> &str {
        &self.state.stream
    }

    /// The partitions this process owns now, in order.
    pub fn owned(&self) -> Vec<u32> {
        self.state.owned()
    }

    /// Waits until the owned partitions change (returns at once if they changed since the
    /// last call).
    pub async fn changed(&mut self) {
        if self.version.changed().await.is_err() {
            // The state lives as long as the share: not reached.
            std::future::pending::<()>().await;
        }
    }

    /// Takes a lease on `partition`, if this process owns it now.
    pub fn lease(&self, partition: u32) -> Option<Lease> {
        let slot = self.state.slots.get(&partition)?;
        let mut held = slot.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.owned {
            return None;
        }
        held.leases += 1;
        let lost_at_start = slot.lost.load(std::sync::atomic::Ordering::Acquire);
        Some(Lease { partition, slot: slot.clone(), owned: slot.owned.subscribe(), lost_at_start })
    }

    /// Leaves the group: this process's partitions are revoked (waiting for their leases,
    /// so call it after the workers stopped) and handed to the other members at once, instead
    /// of after the remote notices this process is gone.
    pub async fn leave(mut self) {
        if let Some(membership) = self.membership.take() {
            let _ = tokio::task::spawn_blocking(move || membership.leave()).await;
        }
    }
}

impl ShareState {
    fn owned(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.held.lock().unwrap_or_else(|e| e.into_inner()).owned)
            .map(|(&partition, _)| partition)
            .collect()
    }

    fn publish(&self) {
        self.metrics.owned.set(self.owned().len() as f64);
        self.version.send_modify(|version| *version += 1);
    }
}

impl ShareHandle {
    pub fn group(&self) -> &str {
        &self.state.group
    }

    pub fn stream(&self) -> &str {
        &self.state.stream
    }

    /// These partitions are this process's now (partitions the stream does not have are
    /// ignored).
    pub fn assign(&self, partitions: &[u32]) {
        let added = self.set_owned(partitions, true);
        if !added.is_empty() {
            self.state.metrics.assigned.increment(added.len() as u64);
            tracing::info!(group = %self.state.group, stream = %self.state.stream, partitions = ?added, "partitions assigned to this process");
            self.state.publish();
        }
    }

    /// These partitions are no longer this process's: new leases are refused at once, and
    /// this waits (blocking, at most `SHARE_HANDOVER_MS`) until the leases held on them are
    /// dropped. Answers the partitions whose leases outlived the bound.
    pub fn revoke(&self, partitions: &[u32]) -> Vec<u32> {
        let started = Instant::now();
        let taken = self.set_owned(partitions, false);
        if taken.is_empty() {
            return Vec::new();
        }
        self.state.metrics.revoked.increment(taken.len() as u64);
        self.state.publish();
        let deadline = started + Duration::from_millis(SHARE_HANDOVER_MS);
        let mut overdue = Vec::new();
        for partition in &taken {
            let slot = &self.state.slots[partition];
            let mut held = slot.held.lock().unwrap_or_else(|e| e.into_inner());
            while held.leases > 0 && !held.owned {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    overdue.push(*partition);
                    break;
                }
                held = slot.released.wait_timeout(held, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
        self.state.metrics.handover_seconds.record(started.elapsed().as_secs_f64());
        if overdue.is_empty() {
            tracing::info!(group = %self.state.group, stream = %self.state.stream, partitions = ?taken, elapsed_ms = started.elapsed().as_millis() as u64, "partitions handed over");
        } else {
            self.state.metrics.handover_overdue.increment(overdue.len() as u64);
            tracing::error!(group = %self.state.group, stream = %self.state.stream, partitions = ?overdue, bound_ms = SHARE_HANDOVER_MS, "workers did not stop in time; the partitions are handed over anyway and may be worked on twice");
        }
        overdue
    }

    /// Sets ownership of these partitions (those the stream has); answers the ones it changed.
    fn set_owned(&self, partitions: &[u32], owned: bool) -> Vec<u32> {
        partitions
            .iter()
            .copied()
            .filter(|partition| self.state.slots.get(partition).is_some_and(|slot| slot.set_owned(owned)))
            .collect()
    }

    /// Every partition owned now is revoked (leaving the group, or a failed rebalance).
    pub fn revoke_all(&self) -> Vec<u32> {
        let owned = self.state.owned();
        self.revoke(&owned)
    }

    /// These partitions were lost: this process is out of the group and another may own them
    /// already. Unlike `revoke` nothing is waited for; the leases' fences fail at once, so
    /// their workers stop without publishing or committing what they hold.
    pub fn lose(&self, partitions: &[u32]) {
        // The fences fail first, so no publish slips in after ownership is seen gone.
        let taken: Vec<u32> = partitions.iter().copied().filter(|p| self.state.slots.contains_key(p)).collect();
        for partition in &taken {
            self.state.slots[partition].lost.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.set_owned(&taken, false);
        if !taken.is_empty() {
            self.state.metrics.lost.increment(taken.len() as u64);
            tracing::warn!(group = %self.state.group, stream = %self.state.stream, partitions = ?taken, "partitions lost (this process was put out of the group); their work stops unpublished");
            self.state.publish();
        }
    }
}

impl Lease {
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Whether the partition has been taken away: the worker should commit and stop.
    pub fn is_revoked(&self) -> bool {
        !*self.owned.borrow()
    }

    /// Resolves once the partition is taken away.
    pub async fn revoked(&mut self) {
        let _ = self.owned.wait_for(|owned| !owned).await;
    }

    /// Whether the partition was lost since the lease was taken (see [`Fence`]).
    pub fn is_lost(&self) -> bool {
        self.slot.lost.load(std::sync::atomic::Ordering::Acquire) != self.lost_at_start
    }

    pub fn fence(&self) -> Fence {
        Fence { slot: self.slot.clone(), lost_at_start: self.lost_at_start }
    }
}

impl Fence {
    /// True while the partition has not been lost since the lease was taken.
    pub fn holds(&self) -> bool {
        self.slot.lost.load(std::sync::atomic::Ordering::Acquire) == self.lost_at_start
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.slot.held.lock().unwrap_or_else(|e| e.into_inner());
        held.leases -= 1;
        if held.leases == 0 {
            self.slot.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_waits_for_the_leases_and_refuses_new_ones() {
        let (mut share, handle) = Share::new("g", "s", 3);
        assert!(share.owned().is_empty());
        assert!(share.lease(0).is_none(), "nothing is owned before an assignment");
        handle.assign(&[0, 2, 7]);
        share.changed().await;
        assert_eq!(share.owned(), [0, 2]);
        let mut lease = share.lease(2).unwrap();
        assert!(!lease.is_revoked());

        // The revocation blocks until the worker has stopped and dropped its lease.
        let revoking = {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let overdue = handle.revoke(&[2]);
                (overdue, started.elapsed())
            })
        };
        lease.revoked().await;
        assert!(lease.is_revoked());
        assert!(share.lease(2).is_none(), "no new lease on a partition being handed over");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!revoking.is_finished(), "the hand-over waits for the lease");
        drop(lease);
        let (overdue, waited) = revoking.join().unwrap();
        assert!(overdue.is_empty());
        assert!(waited >= Duration::from_millis(100));
        assert_eq!(share.owned(), [0]);

        // Partitions without leases are handed over at once; assigned again, they lease again.
        assert!(handle.revoke_all().is_empty());
        assert!(share.owned().is_empty());
        handle.assign(&[2]);
        assert_eq!(share.lease(2).map(|lease| lease.partition()), Some(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_partition_fails_its_fences_at_once_and_a_new_lease_has_a_new_fence() {
        let (share, handle) = Share::new("g", "s", 1);
        handle.assign(&[0]);
        let lease = share.lease(0).unwrap();
        let fence = lease.fence();
        assert!(fence.holds() && !lease.is_lost());
        let started = Instant::now();
        handle.lose(&[0]);
        assert!(started.elapsed() < Duration::from_secs(1), "losing waits for no lease");
        assert!(!fence.holds() && lease.is_lost() && lease.is_revoked());
        assert!(share.lease(0).is_none());
        drop(lease);
        handle.assign(&[0]);
        let again = share.lease(0).unwrap();
        assert!(again.fence().holds(), "a lease taken after the loss starts clean");
        assert!(!fence.holds(), "the old fence stays failed");
    }
}
