//! Room for the devices patterns add (`max_devices`), shared so that no
//! pattern can starve another: exact `[[device]]`s take none of it (they
//! are always watched); each pattern (a pattern `[[device]]`, a level of a
//! `[[sparkplug]]`) is guaranteed an equal share of the limit, or its own
//! `max_devices` when that is lower, and may borrow what the other patterns
//! leave of their shares, up to its own `max_devices`; never room still
//! guaranteed to another. Pure: the fleet counts its devices in (`count`,
//! `take`), and a reload makes the room anew.

use std::collections::HashMap;

use crate::config::{Config, DeviceSpec, Watch};
use crate::throttle::Throttle;

use super::REFUSALS_LOG_EVERY;

/// One pattern's part of the room.
#[derive(Debug)]
pub struct Share {
    /// The pattern as written (`fleet/{id}/status`): in logs and metrics.
    pub label: String,
    /// Its devices now.
    pub held: usize,
    /// What it is guaranteed.
    pub share: usize,
    /// What it may take at most (its own `max_devices`, or the limit).
    pub cap: usize,
    /// Its refusals are logged at most this often.
    pub refusals: Throttle,
}

#[derive(Debug)]
pub struct Room {
    /// `max_devices`: the devices patterns may add, in all.
    pub limit: usize,
    /// By pattern (`pattern_key`).
    shares: HashMap<usize, Share>,
}

impl Room {
    /// The room of `config`'s patterns, none of it taken; a pattern whose
    /// label `before` knew keeps its refusal log's pace.
    pub fn new(config: &Config, before: Option<&Room>) -> Room {
        let throttles: HashMap<&str, &Throttle> =
            before.iter().flat_map(|b| b.shares.values()).map(|s| (s.label.as_str(), &s.refusals)).collect();
        let patterns: Vec<&DeviceSpec> =
            config.devices.iter().filter(|d| !matches!(d.watch, Watch::Device { .. })).collect();
        let limit = config.max_devices;
        let equal = limit / patterns.len().max(1);
        let shares = patterns
            .into_iter()
            .map(|spec| {
                let own = spec.max_devices.unwrap_or(limit).min(limit);
                let label = spec.watch.label().1;
                let refusals =
                    throttles.get(label.as_str()).map_or_else(|| Throttle::new(REFUSALS_LOG_EVERY), |t| (*t).clone());
                (super::pattern_key(spec), Share { label, held: 0, share: own.min(equal), cap: own, refusals })
            })
            .collect();
        Room { limit, shares }
    }

    /// The patterns' labels.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.shares.values().map(|s| s.label.as_str())
    }

    /// A device of the pattern `key` is known (restored, or kept through a
    /// reload), whether or not it fits.
    pub fn count(&mut self, key: usize) {
        if let Some(share) = self.shares.get_mut(&key) {
            share.held += 1;
        }
    }

    /// Whether the `[[device]]` `key` may add a device: a pattern below its
    /// cap, and within its share or the room no pattern is guaranteed (the
    /// device is then counted in); an exact one always.
    pub fn take(&mut self, key: usize) -> bool {
        let free = self.free();
        let Some(share) = self.shares.get_mut(&key) else { return true };
        let fits = share.held < share.cap && (share.held < share.share || free > 0);
        share.held += usize::from(fits);
        fits
    }

    /// The room neither taken nor guaranteed to a pattern below its share.
    pub fn free(&self) -> usize {
        let (held, reserved) =
            self.shares.values().fold((0usize, 0usize), |(h, r), s| (h + s.held, r + s.share.saturating_sub(s.held)));
        self.limit.saturating_sub(held + reserved)
    }

    /// The pattern `key`'s part (for the refusal's log line).
    pub fn share_mut(&mut self, key: usize) -> Option<&mut Share> {
        self.shares.get_mut(&key)
    }
}
