//! The moments a device keeps, in compact form: a fleet of a million
//! devices keeps several of them each, so they take 8 bytes a clock
//! instead of `Instant`'s and `SystemTime`'s 16, and an absent one costs
//! nothing (`Option` uses the zero no encoding produces).
//!
//! Both clocks keep nanoseconds, so a moment converts back exactly: a
//! monotonic one from an origin fixed when the process first needs one
//! (about ±146 years around it), a wall one from the Unix epoch (1824 to
//! 2116; outside, it is clamped).

use std::num::NonZeroI64;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Now;

/// The process's monotonic origin.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Signed nanoseconds, stored odd (`2n + 1`) so that none is zero; the
/// order is kept.
fn encode(nanos: i128) -> NonZeroI64 {
    let half = i128::from(i64::MAX / 2);
    let n = nanos.clamp(-half - 1, half);
    NonZeroI64::new((n * 2 + 1) as i64).unwrap_or(NonZeroI64::MIN)
}

fn decode(v: NonZeroI64) -> i128 {
    i128::from(v.get() >> 1)
}

/// Applies signed nanoseconds to an origin.
fn offset<T: Copy>(
    origin: T,
    nanos: i128,
    add: fn(&T, Duration) -> Option<T>,
    sub: fn(&T, Duration) -> Option<T>,
) -> T {
    let d = Duration::from_nanos(nanos.unsigned_abs().min(u128::from(u64::MAX)) as u64);
    if nanos >= 0 { add(&origin, d) } else { sub(&origin, d) }.unwrap_or(origin)
}

fn signed(later: Result<Duration, Duration>) -> i128 {
    match later {
        Ok(d) => d.as_nanos() as i128,
        Err(d) => -(d.as_nanos() as i128),
    }
}

/// An `Instant` in 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mono(NonZeroI64);

impl From<Instant> for Mono {
    fn from(t: Instant) -> Mono {
        let origin = *ORIGIN;
        Mono(encode(signed(t.checked_duration_since(origin).ok_or_else(|| origin.duration_since(t)))))
    }
}

impl From<Mono> for Instant {
    fn from(m: Mono) -> Instant {
        offset(*ORIGIN, decode(m.0), Instant::checked_add, Instant::checked_sub)
    }
}

/// A `SystemTime` in 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wall(NonZeroI64);

impl From<SystemTime> for Wall {
    fn from(t: SystemTime) -> Wall {
        Wall(encode(signed(t.duration_since(UNIX_EPOCH).map_err(|e| e.duration()))))
    }
}

impl From<Wall> for SystemTime {
    fn from(w: Wall) -> SystemTime {
        offset(UNIX_EPOCH, decode(w.0), SystemTime::checked_add, SystemTime::checked_sub)
    }
}

/// A `Now` in 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub mono: Mono,
    pub wall: Wall,
}

impl From<Now> for Stamp {
    fn from(now: Now) -> Stamp {
        Stamp { mono: now.mono.into(), wall: now.wall.into() }
    }
}

impl From<Stamp> for Now {
    fn from(s: Stamp) -> Now {
        Now { mono: s.mono.into(), wall: s.wall.into() }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn absent_moments_cost_nothing() {
        assert_eq!(size_of::<Option<Mono>>(), 8);
        assert_eq!(size_of::<Option<Wall>>(), 8);
        assert_eq!(size_of::<Option<Stamp>>(), 16);
    }

    #[test]
    fn the_origin_itself_round_trips() {
        let origin = *ORIGIN;
        assert_eq!(Instant::from(Mono::from(origin)), origin);
        assert_eq!(SystemTime::from(Wall::from(UNIX_EPOCH)), UNIX_EPOCH);
    }

    proptest! {
        /// Any moment a daemon meets (a century either way) converts back
        /// exactly, and the order of two moments is kept.
        #[test]
        fn round_trips_exactly_and_keeps_order(a in -2_000_000_000_000_000_000i64..2_000_000_000_000_000_000,
                                               b in -2_000_000_000_000_000_000i64..2_000_000_000_000_000_000) {
            let at = |n: i64| offset(UNIX_EPOCH + Duration::from_secs(1_800_000_000), i128::from(n),
                SystemTime::checked_add, SystemTime::checked_sub);
            let (ta, tb) = (at(a), at(b));
            prop_assert_eq!(SystemTime::from(Wall::from(ta)), ta);
            prop_assert_eq!(Wall::from(ta).cmp(&Wall::from(tb)), ta.cmp(&tb));
            let now = Instant::now();
            let ia = offset(now, i128::from(a / 1000), Instant::checked_add, Instant::checked_sub);
            let ib = offset(now, i128::from(b / 1000), Instant::checked_add, Instant::checked_sub);
            prop_assert_eq!(Instant::from(Mono::from(ia)), ia);
            prop_assert_eq!(Mono::from(ia).cmp(&Mono::from(ib)), ia.cmp(&ib));
        }
    }
}
