//! What the hot path reads: the event types in force, indexed by kind and lookup name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::{EventKind, EventType};

#[derive(Default)]
struct KindTable {
    named: HashMap<String, Arc<EventType>>,
    /// The kind's catch-all type (page, screen, identify, group, alias without a name).
    any: Option<Arc<EventType>>,
}

/// An immutable view of the catalog. Readers hold an `Arc<Snapshot>`; a change builds a new
/// snapshot and swaps it in, so a reader never waits for a writer.
#[derive(Default)]
pub struct Snapshot {
    by_subject: BTreeMap<String, Arc<EventType>>,
    kinds: [KindTable; 7],
}

impl Snapshot {
    /// Builds the index. Lookup keys are unique: registration refuses a type whose key
    /// another subject holds, so a duplicate here keeps the first subject (by name) and logs.
    pub(crate) fn build(types: impl IntoIterator<Item = Arc<EventType>>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for event_type in types {
            let table = &mut snapshot.kinds[event_type.kind.index()];
            let slot = match &event_type.event {
                Some(name) => table.named.entry(name.clone()).or_insert_with(|| event_type.clone()),
                None => table.any.get_or_insert_with(|| event_type.clone()),
            };
            if !Arc::ptr_eq(slot, &event_type) {
                tracing::warn!(subject = %event_type.name, holder = %slot.name, "two event types share a lookup key; the first is kept");
                continue;
            }
            snapshot.by_subject.insert(event_type.name.clone(), event_type);
        }
        snapshot
    }

    /// The type for an event. `name` is the track event name, the page or screen name (a
    /// named type wins, else the kind's catch-all type), ignored for identify, group and alias,
    /// and the stream for `Raw`.
    pub fn lookup(&self, kind: EventKind, name: &str) -> Option<&Arc<EventType>> {
        let table = &self.kinds[kind.index()];
        match kind {
            EventKind::Track | EventKind::Raw => table.named.get(name),
            EventKind::Page | EventKind::Screen => table.named.get(name).or(table.any.as_ref()),
            EventKind::Identify | EventKind::Group | EventKind::Alias => table.any.as_ref(),
        }
    }

    pub fn raw_for_stream(&self, stream: &str) -> Option<&Arc<EventType>> {
        self.kinds[EventKind::Raw.index()].named.get(stream)
    }

    /// Every type in force, by subject name.
    pub fn types(&self) -> impl Iterator<Item = &Arc<EventType>> {
        self.by_subject.values()
    }

    pub fn get(&self, subject: &str) -> Option<&Arc<EventType>> {
        self.by_subject.get(subject)
    }

    pub fn len(&self) -> usize {
        self.by_subject.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }
}
