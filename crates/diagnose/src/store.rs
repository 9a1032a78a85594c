//! The time-ordered store of observations the rules read.

use std::collections::{BTreeMap, VecDeque};

use crate::{Observation, Signal};

/// Hard cap on stored observations, so a runaway producer cannot grow memory without bound
/// (about one observation a second for the default two hours fits ten times over).
const MAX_OBSERVATIONS: usize = 100_000;

/// One MTU change of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuChange {
    /// When it happened.
    pub at_ms: u64,
    /// Interface.
    pub ifname: String,
    /// MTU before.
    pub old_bytes: u32,
    /// MTU after.
    pub new_bytes: u32,
}

/// What is known now about one interface. Kept outside the retention window, because the
/// current MTU and the last change must survive however long an incident lasts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// The current MTU, if reported.
    pub mtu_bytes: Option<u32>,
    /// When `mtu_bytes` was reported.
    pub mtu_at_ms: u64,
    /// The last MTU change.
    pub last_mtu_change: Option<MtuChange>,
    /// Whether the link is up, if reported.
    pub up: Option<bool>,
    /// When `up` was reported.
    pub up_at_ms: u64,
}

/// Observations in time order, pruned to the retention window, plus the latest state of
/// each interface.
#[derive(Debug, Clone)]
pub struct Store {
    observations: VecDeque<Observation>,
    links: BTreeMap<String, LinkStatus>,
    retention_ms: u64,
    newest_ms: u64,
}

impl Store {
    /// An empty store keeping `retention_ms` of observations.
    pub fn new(retention_ms: u64) -> Self {
        Self {
            observations: VecDeque::new(),
            links: BTreeMap::new(),
            retention_ms,
            newest_ms: 0,
        }
    }

    /// Adds an observation in time order (late arrivals are inserted where they belong) and
    /// drops what has fallen out of the retention window.
    pub fn push(&mut self, obs: Observation) {
        self.update_link(&obs);
        self.newest_ms = self.newest_ms.max(obs.at_ms);
        // Producers are mostly in order; partition_point keeps equal timestamps in arrival
        // order so a change and its consequences at the same millisecond stay ordered.
        let pos = self.observations.partition_point(|o| o.at_ms <= obs.at_ms);
        self.observations.insert(pos, obs);
        let horizon = self.newest_ms.saturating_sub(self.retention_ms);
        while self.observations.front().is_some_and(|o| o.at_ms < horizon)
            || self.observations.len() > MAX_OBSERVATIONS
        {
            self.observations.pop_front();
        }
    }

    fn update_link(&mut self, obs: &Observation) {
        match &obs.signal {
            Signal::LinkMtu { ifname, mtu_bytes } => {
                let link = self.links.entry(ifname.clone()).or_default();
                if obs.at_ms >= link.mtu_at_ms {
                    link.mtu_bytes = Some(*mtu_bytes);
                    link.mtu_at_ms = obs.at_ms;
                }
            }
            Signal::LinkMtuChanged {
                ifname,
                old_bytes,
                new_bytes,
            } => {
                let link = self.links.entry(ifname.clone()).or_default();
                if obs.at_ms >= link.mtu_at_ms {
                    link.mtu_bytes = Some(*new_bytes);
                    link.mtu_at_ms = obs.at_ms;
                    link.last_mtu_change = Some(MtuChange {
                        at_ms: obs.at_ms,
                        ifname: ifname.clone(),
                        old_bytes: *old_bytes,
                        new_bytes: *new_bytes,
                    });
                }
            }
            Signal::LinkState { ifname, up } => {
                let link = self.links.entry(ifname.clone()).or_default();
                if obs.at_ms >= link.up_at_ms {
                    link.up = Some(*up);
                    link.up_at_ms = obs.at_ms;
                }
            }
            _ => {}
        }
    }

    /// The newest timestamp seen.
    pub fn newest_ms(&self) -> u64 {
        self.newest_ms
    }

    /// All retained observations, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Observation> {
        self.observations.iter()
    }

    /// Retained observations at or after `at_ms`, oldest first.
    pub fn since(&self, at_ms: u64) -> impl DoubleEndedIterator<Item = &Observation> {
        let start = self.observations.partition_point(|o| o.at_ms < at_ms);
        self.observations.range(start..)
    }

    /// The number of retained observations.
    pub fn len(&self) -> usize {
        self.observations.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }

    /// What is known about interface `ifname`.
    pub fn link(&self, ifname: &str) -> Option<&LinkStatus> {
        self.links.get(ifname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mtu(at_ms: u64, ifname: &str, old_bytes: u32, new_bytes: u32) -> Observation {
        Observation::new(
            at_ms,
            Signal::LinkMtuChanged {
                ifname: ifname.into(),
                old_bytes,
                new_bytes,
            },
        )
    }

    #[test]
    fn keeps_time_order_and_prunes_but_remembers_links() {
        let mut store = Store::new(10_000);
        store.push(mtu(5_000, "eno1", 1500, 9000));
        store.push(Observation::new(
            2_000,
            Signal::UploadStall { stalled_seconds: 1 },
        ));
        let times: Vec<u64> = store.iter().map(|o| o.at_ms).collect();
        assert_eq!(times, [2_000, 5_000]);
        assert_eq!(store.since(3_000).count(), 1);
        store.push(Observation::new(
            20_000,
            Signal::UploadStall { stalled_seconds: 1 },
        ));
        assert_eq!(store.len(), 1);
        let link = store.link("eno1").unwrap();
        assert_eq!(link.mtu_bytes, Some(9000));
        assert_eq!(link.last_mtu_change.as_ref().unwrap().at_ms, 5_000);
    }

    #[test]
    fn late_link_reports_do_not_overwrite_newer_state() {
        let mut store = Store::new(60_000);
        store.push(mtu(5_000, "eno1", 9000, 1500));
        store.push(Observation::new(
            4_000,
            Signal::LinkMtu {
                ifname: "eno1".into(),
                mtu_bytes: 9000,
            },
        ));
        assert_eq!(store.link("eno1").unwrap().mtu_bytes, Some(1500));
    }
}
