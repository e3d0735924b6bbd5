//! The `exec` action: runs a program with the event, never through a shell.
//!
//! Arguments are rendered one by one and passed as separate argv entries,
//! so a device id like `a;rm -rf ~` or `$(reboot)` is only ever text. The
//! event also arrives as `WILLWATCH_*` environment variables and as JSON on
//! stdin. Each run gets its own process group; at the timeout the whole
//! group is killed, children included. Output is logged, capped.
//! At most `concurrency` runs at once; further events wait in the queue.
//!
//! A program that cannot start for want of what comes back (file
//! descriptors, processes, memory) is started again with backoff, within
//! the action's budget as a webhook delivery is (`actions::retry`); one
//! that cannot be run as named (missing, not executable), or still not
//! started when the budget is spent, is logged at error and written to the
//! dead-letter file. A device's runs start in order: one waiting to start
//! again holds back that device's later runs, not other devices'. A
//! program that started is not run again for the event: how it ended is
//! logged and counted.

use std::collections::HashMap;
use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use super::{Context, Job, retry};
use crate::backoff::Backoff;
use crate::config::Exec;
use crate::dead_letter::{self, Record};
use crate::event::{Event, rfc3339};

/// Output kept per stream and run; the rest is counted, not kept.
const OUTPUT_CAP: usize = 4096;

/// Runs taken from the queue but not started, per slot: they wait for
/// their device's earlier run to start, then for a slot.
const WAITING_PER_SLOT: usize = 64;

/// Start failures that will be the same on every attempt: the program
/// cannot be run as named.
const LASTING: [Errno; 9] = [
    Errno::ENOENT,
    Errno::EACCES,
    Errno::EPERM,
    Errno::ENOEXEC,
    Errno::ENOTDIR,
    Errno::EISDIR,
    Errno::ELOOP,
    Errno::ENAMETOOLONG,
    Errno::E2BIG,
];

pub async fn run(name: String, spec: Exec, context: Context, mut jobs: mpsc::Receiver<Job>) {
    let spec = Arc::new(spec);
    let slots = Arc::new(Semaphore::new(spec.concurrency));
    let taken = Arc::new(Semaphore::new(spec.concurrency * WAITING_PER_SLOT));
    let mut running = JoinSet::new();
    // The signal of the last run per device: sent once it started (or was
    // given up); dropped when it was left owed.
    let mut order: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        while running.try_join_next().is_some() {}
        order.retain(|_, started| matches!(started.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        let Job::Event(event) = job else { continue };
        let Ok(waiting) = Arc::clone(&taken).acquire_owned().await else { break };
        let (started, turn) = oneshot::channel();
        let before = order.insert(event.device.clone(), turn);
        let (name, spec, context, slots) = (name.clone(), Arc::clone(&spec), context.clone(), Arc::clone(&slots));
        running.spawn(async move {
            // A run left owed by a stop leaves the device's later runs owed
            // too, so they resume in order.
            if let Some(before) = before
                && before.await.is_err()
            {
                return;
            }
            let Ok(slot) = slots.acquire_owned().await else { return };
            let Some(outcome) = execute(&name, &spec, &context, &event, started).await else { return };
            context.metrics.action_run(&name, outcome);
            context.done(&name, &event);
            drop((slot, waiting));
        });
    }
    while running.join_next().await.is_some() {}
}

/// The event as environment variables.
pub fn environment(event: &Event) -> Vec<(&'static str, String)> {
    // Environment values cannot hold NUL; payloads are arbitrary bytes.
    let clean = |s: &str| s.replace('\0', "\u{fffd}");
    let mut env = vec![
        ("WILLWATCH_EVENT", event.kind.as_str().to_string()),
        ("WILLWATCH_EVENT_ID", event.id.clone()),
        ("WILLWATCH_DEVICE", clean(&event.device)),
        ("WILLWATCH_TOPIC", clean(&event.topic)),
        ("WILLWATCH_PAYLOAD", clean(&event.payload)),
        ("WILLWATCH_PREVIOUS", event.previous.to_string()),
        ("WILLWATCH_AT", rfc3339(event.at)),
    ];
    if let Some(since) = event.offline_since {
        env.push(("WILLWATCH_OFFLINE_SINCE", rfc3339(since)));
    }
    if let Some(d) = event.offline_for {
        env.push(("WILLWATCH_OFFLINE_FOR_S", format!("{:.3}", d.as_secs_f64())));
    }
    if let Some(n) = event.attempts {
        env.push(("WILLWATCH_ATTEMPTS", n.to_string()));
    }
    env
}

/// Runs the command for `event`, starting it again while it cannot start
/// for a passing reason, and says `started` once it started or was given
/// up. The outcome for the metrics, or `None` when a new attempt was due
/// while the daemon stops: the event stays owed, same id.
async fn execute(
    name: &str,
    spec: &Exec,
    context: &Context,
    event: &Event,
    started: oneshot::Sender<()>,
) -> Option<&'static str> {
    let mut backoff = Backoff::new(retry::FIRST, spec.retries.max_interval);
    let mut attempt = 0;
    let error = loop {
        attempt += 1;
        let error = match start(spec, event) {
            Ok(child) => {
                let _ = started.send(());
                return Some(finish(name, spec, event, child).await);
            }
            Err(e) => e,
        };
        if !passing(&error) {
            break error;
        }
        let age = SystemTime::now().duration_since(event.at).unwrap_or_default();
        let Some(wait) = retry::next_attempt(&spec.retries, attempt, age, None, backoff.next_delay()) else {
            break error;
        };
        tracing::warn!(action = %name, device = %event.device, event = %event.kind, event_id = %event.id,
            program = %spec.program.display(), attempt, error = %error, retry_in = ?wait, what = "command_retry",
            "the command could not start; will try again");
        if !super::retry::pause(wait, &context.stopping).await {
            tracing::info!(action = %name, device = %event.device, event_id = %event.id, attempt,
                "stopping: the command's next attempt is left owed; it resumes at the next start, same id");
            return None;
        }
    };
    let reason = format!("cannot start {}: {error}", spec.program.display());
    tracing::error!(action = %name, device = %event.device, event = %event.kind, event_id = %event.id,
        attempts = attempt, error = %reason, file = %context.state_dir.join(dead_letter::FILE_NAME).display(),
        what = "command_given_up", "the command could not start; given up and written to the dead-letter file");
    context.dead_letter(Record::new(name, &event.id, &[event], &reason));
    let _ = started.send(());
    Some("not_started")
}

/// Whether a program that could not start may start on a later attempt:
/// not when it cannot be run as named (`LASTING`), nor when the standard
/// library refused the command itself (a NUL byte); yes for what runs out
/// and comes back (EMFILE, ENFILE, EAGAIN, ENOMEM, ETXTBSY) and anything
/// else the system says.
fn passing(error: &io::Error) -> bool {
    error.raw_os_error().is_some_and(|code| !LASTING.contains(&Errno::from_raw(code)))
}

/// Starts the program for `event`, its stdin, stdout and stderr piped.
fn start(spec: &Exec, event: &Event) -> io::Result<Child> {
    let args: Vec<String> = spec.args.iter().map(|a| a.render(event).replace('\0', "\u{fffd}")).collect();
    Command::new(&spec.program)
        .args(&args)
        .envs(environment(event))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Feeds the started program the event and waits for it (or its timeout);
/// returns the outcome for the metrics.
async fn finish(name: &str, spec: &Exec, event: &Event, mut child: Child) -> &'static str {
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let body = event.to_json().to_string();
    let finished = tokio::time::timeout(spec.timeout, async {
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A program that ignores stdin closes it early; that is fine.
                let _ = stdin.write_all(body.as_bytes()).await;
            }
        };
        let (_, out, err, status) = tokio::join!(feed, capped(stdout), capped(stderr), child.wait());
        (out, err, status)
    })
    .await;
    match finished {
        Ok((out, err, Ok(status))) if status.success() => {
            tracing::info!(action = %name, device = %event.device, event = %event.kind,
                stdout = %out, stderr = %err, what = "command_finished", "command finished");
            "ok"
        }
        Ok((out, err, status)) => {
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            tracing::error!(action = %name, device = %event.device, event = %event.kind,
                status = %status, stdout = %out, stderr = %err, "command failed");
            "failed"
        }
        Err(_) => {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            tracing::error!(action = %name, device = %event.device, event = %event.kind,
                timeout = ?spec.timeout, what = "command_timed_out", "command timed out; killed it and its process group");
            "timeout"
        }
    }
}

/// Reads a stream to its end, keeping the first `OUTPUT_CAP` bytes.
async fn capped(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
        let room = OUTPUT_CAP.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    let mut text = String::from_utf8_lossy(&kept).trim_end().to_string();
    if total > OUTPUT_CAP {
        text.push_str(&format!(" … ({total} bytes in all)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, test_event};
    use std::time::Duration;

    #[test]
    fn a_program_is_started_again_when_what_it_lacked_comes_back_never_when_it_cannot_be_run() {
        let os = |errno: Errno| io::Error::from_raw_os_error(errno as i32);
        for lacked in [Errno::EMFILE, Errno::ENFILE, Errno::EAGAIN, Errno::ENOMEM, Errno::ETXTBSY] {
            assert!(passing(&os(lacked)), "{lacked}");
        }
        for lasting in [Errno::ENOENT, Errno::EACCES, Errno::ENOEXEC, Errno::ENOTDIR] {
            assert!(!passing(&os(lasting)), "{lasting}");
        }
        assert!(!passing(&io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data")));
    }

    #[test]
    fn environment_carries_the_event_and_survives_nul_bytes() {
        let mut e = test_event(EventKind::Online, "a;rm -rf ~");
        e.payload = "on\0line".into();
        e.offline_for = Some(Duration::from_millis(1500));
        let env: std::collections::HashMap<_, _> = environment(&e).into_iter().collect();
        assert_eq!(env["WILLWATCH_EVENT"], "online");
        assert_eq!(env["WILLWATCH_DEVICE"], "a;rm -rf ~");
        assert_eq!(env["WILLWATCH_PAYLOAD"], "on\u{fffd}line");
        assert_eq!(env["WILLWATCH_OFFLINE_FOR_S"], "1.500");
        assert!(!env.contains_key("WILLWATCH_ATTEMPTS"));
    }
}
