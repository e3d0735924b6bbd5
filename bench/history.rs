//! What the history costs: the 100k retained burst with history on (the
//! default) against off, how many transitions a second its writer stores,
//! and the size of `history.db` per million transitions.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use willwatch::history::History;
use willwatch::transition::Transition;

use crate::contestants::{self, BurstRun};

pub struct Run {
    pub devices: usize,
    pub on: Vec<BurstRun>,
    pub off: Vec<BurstRun>,
    /// A storm of `storm` offlines: first will to last webhook, on and off.
    pub storm: usize,
    pub storm_on: Vec<Duration>,
    pub storm_off: Vec<Duration>,
    /// Transitions written, and how long it took.
    pub written: usize,
    pub took: Duration,
    /// `history.db` (checkpointed) per million transitions.
    pub bytes_per_million: u64,
}

const OFF: &str = "[history]\nkeep = \"0s\"\n";

pub async fn history(bin: &Path, n: usize, rounds: usize, writes: usize, storm: usize) -> Result<Run, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    crate::load::publish_retained(broker.port, n, "online").await?;
    let mut run = Run {
        devices: n,
        on: Vec::new(),
        off: Vec::new(),
        storm,
        storm_on: Vec::new(),
        storm_off: Vec::new(),
        written: writes,
        took: Duration::ZERO,
        bytes_per_million: 0,
    };
    for round in 0..rounds {
        eprintln!("burst of {n} with history on and off, round {}", round + 1);
        run.on.push(contestants::willwatch_burst_with(bin, broker.port, n, contestants::PATTERN).await?);
        let off = format!("{}{OFF}", contestants::PATTERN);
        run.off.push(contestants::willwatch_burst_with(bin, broker.port, n, &off).await?);
    }
    for round in 0..rounds {
        eprintln!("storm of {storm} with history on and off, round {}", round + 1);
        run.storm_on.push(crate::storm::storm(bin, storm).await?.elapsed);
        run.storm_off.push(crate::storm::storm_with(bin, storm, OFF).await?.elapsed);
    }
    eprintln!("history writes: {writes} transitions");
    let (took, bytes) = tokio::task::spawn_blocking(move || write(writes)).await.map_err(|e| e.to_string())??;
    run.took = took;
    run.bytes_per_million = bytes * 1_000_000 / writes as u64;
    Ok(run)
}

/// Appends `n` transitions of 10,000 devices in the writer's batches, as
/// the writer does; returns the time and the database's size.
fn write(n: usize) -> Result<(Duration, u64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut history = History::open(dir.path()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let at = SystemTime::now();
    let entries: Vec<Transition> = (0..n)
        .map(|i| {
            let offline = i % 2 == 0;
            Transition {
                device: format!("dev-{}", i % 10_000).into(),
                at: at + Duration::from_millis(i as u64),
                from: if offline { "online" } else { "offline" },
                to: if offline { "offline" } else { "online" },
                cause: if offline { "will" } else { "birth" },
                payload: if offline { "offline".into() } else { "online".into() },
                offline_for: (!offline).then_some(Duration::from_secs(42)),
            }
        })
        .collect();
    for batch in entries.chunks(8192) {
        history.append(batch).map_err(|e| e.to_string())?;
    }
    let took = start.elapsed();
    drop(history);
    let size: u64 = std::fs::read_dir(dir.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok((took, size))
}
