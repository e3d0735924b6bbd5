//! A fault test's seed: `WILLWATCH_FAULT_SEED` when set (to repeat a run),
//! else random; printed first, so that a failure can be run again.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// The seed for the fault test `what`, and its generator.
pub fn fault_seed(what: &str) -> (u64, StdRng) {
    let seed: u64 =
        std::env::var("WILLWATCH_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("{what} seed: {seed} (WILLWATCH_FAULT_SEED={seed} repeats it)");
    (seed, StdRng::seed_from_u64(seed))
}
