//! Actions: what runs when a device goes offline or comes back.
//!
//! Every configured action gets its own worker task fed by a bounded queue;
//! `dispatch` routes each event to the workers of the actions it names
//! (decided with the event, so the outbox knows what is owed). A slow
//! action (a hanging webhook, a stuck command) fills only its own queue:
//! further events for it are dead-lettered, counted and logged at error,
//! and every other action and the monitor go on unhindered.
//!
//! Every event an action takes is acknowledged when the action is done with
//! it (delivered, given up and dead-lettered, or not its kind), through
//! `Context::done`; the state writer then stops owing it. What is not
//! acknowledged when the daemon stops, or dies, is sent again at the next
//! start with the same id.
//!
//! One file per kind: `log`, `webhook/`, `reconnect`, `exec`, `publish`.
//! Each exposes `run(name, settings, context, jobs)`, the worker loop. The
//! services a person reads run on the webhook's worker; `notify/` builds
//! their requests. `replay` is `willwatch dead-letter replay`: HTTP
//! deliveries given up on, sent again; `test_message` is `willwatch notify
//! test`.

mod exec;
mod log;
mod notify;
mod publish;
mod reconnect;
pub mod replay;
mod retry;
pub mod test_message;
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ActionKind, ActionSpec, BUILTIN_LOG, Config};
use crate::dead_letter::{self, Record};
use crate::event::{Event, EventKind};
use crate::metrics::{ActionLabel, Metrics};
use crate::mqtt::Publisher;
use crate::store::{Ack, Op, Outgoing};

/// Events waiting per action before new ones are dead-lettered: more than
/// a storm of every device of a large fleet (the queue grows only as used).
pub const QUEUE_PER_ACTION: usize = 16_384;

/// How often each action's queue depth is reported to `/metrics`.
const DEPTH_EVERY: Duration = Duration::from_secs(1);

/// What a worker is told.
#[derive(Debug, Clone)]
pub enum Job {
    Event(Arc<Event>),
    Reload(Arc<Config>),
}

/// What workers share: a way to decide new events (escalations) and to
/// acknowledge finished ones, the daemon's MQTT session, the state
/// directory and one HTTP client.
#[derive(Clone)]
pub struct Context {
    /// Weak, so the writer's input still closes when the monitor hangs up.
    store: mpsc::WeakSender<Op>,
    acks: mpsc::UnboundedSender<Ack>,
    mqtt: Publisher,
    state_dir: PathBuf,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// The daemon is stopping: attempts in flight finish, a first attempt
    /// still goes out, but no retry is waited for (what is not done stays
    /// owed and resumes at the next start).
    stopping: CancellationToken,
}

impl Context {
    pub fn new(
        store: mpsc::WeakSender<Op>,
        acks: mpsc::UnboundedSender<Ack>,
        mqtt: Publisher,
        state_dir: PathBuf,
        metrics: Arc<Metrics>,
        stopping: CancellationToken,
    ) -> Context {
        Context { store, acks, mqtt, state_dir, http: http_client(), metrics, stopping }
    }

    /// Writes what `record.action` gave up on to the dead-letter file, and
    /// counts it (and any record the file's rotation discarded).
    pub fn dead_letter(&self, record: Record) {
        let label = ActionLabel { action: record.action.clone() };
        self.metrics.dead_letters.get_or_create(&label).inc();
        match dead_letter::append(&self.state_dir, &record) {
            Ok(0) => {}
            Ok(discarded) => {
                self.metrics.dead_letters_discarded.inc_by(discarded as u64);
                tracing::error!(discarded, max_size = dead_letter::MAX_SIZE,
                    file = %self.state_dir.join(dead_letter::FILE_NAME).display(),
                    "the dead-letter file was full and rotated; the records of its previous rotation are discarded");
            }
            Err(e) => {
                let record = serde_json::to_string(&record).unwrap_or_default();
                tracing::error!(file = %self.state_dir.join(dead_letter::FILE_NAME).display(), error = %e,
                    "cannot write the dead-letter file; the record is only in this log: {record}");
            }
        }
    }

    /// Decides a new event (an escalation): recorded, then dispatched.
    async fn fire(&self, event: Event) {
        match self.store.upgrade() {
            Some(store) if store.send(Op::Event(Box::new(event), None)).await.is_ok() => {}
            _ => tracing::warn!("stopping: an escalation was not recorded"),
        }
    }

    /// `action` is done with `event`: it is no longer owed.
    pub fn done(&self, action: &str, event: &Event) {
        // Closed only at the very end of a shutdown: then it stays owed.
        let _ = self.acks.send((event.id.clone(), action.to_string()));
    }
}

/// The HTTP client of every webhook: no redirects followed, our name.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("willwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds with static settings")
}

/// A running action: its settings, the queue into its worker, its task.
struct Worker {
    spec: ActionSpec,
    queue: mpsc::Sender<Job>,
    task: tokio::task::Id,
    dropped: u64,
}

/// The workers, and the tasks that run them, supervised: a worker that
/// panics is logged with its action's name, counted and started again.
struct Dispatcher {
    config: Arc<Config>,
    context: Context,
    workers: HashMap<String, Worker>,
    tasks: JoinSet<()>,
}

/// Routes events to action workers until `input` closes, then lets every
/// worker drain its queue and returns.
pub async fn dispatch(config: Arc<Config>, context: Context, mut input: mpsc::Receiver<Outgoing>) {
    let mut d = Dispatcher { config, context, workers: HashMap::new(), tasks: JoinSet::new() };
    d.reconcile();
    let mut depths = tokio::time::interval(DEPTH_EVERY);
    depths.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            message = input.recv() => match message {
                Some(message) => message,
                None => break,
            },
            _ = depths.tick() => {
                d.report_depths();
                continue;
            }
        };
        d.reap();
        match message {
            Outgoing::Event(event) => d.route(&event),
            Outgoing::Reload(config) => {
                d.config = config;
                d.reconcile();
                for (name, worker) in &d.workers {
                    if worker.queue.try_send(Job::Reload(Arc::clone(&d.config))).is_err() {
                        tracing::warn!(action = %name, "action queue full: this action did not see the reload");
                    }
                }
            }
        }
    }
    d.workers.clear();
    while d.tasks.join_next().await.is_some() {}
}

impl Dispatcher {
    /// Sets `willwatch_action_queue_depth` from each worker's queue.
    fn report_depths(&self) {
        for (name, worker) in &self.workers {
            let depth = worker.queue.max_capacity() - worker.queue.capacity();
            let label = ActionLabel { action: name.clone() };
            self.context.metrics.action_queue_depth.get_or_create(&label).set(depth as i64);
        }
    }

    fn route(&mut self, event: &Arc<Event>) {
        for name in event.actions.iter() {
            self.route_to(name, event, true);
        }
    }

    fn route_to(&mut self, name: &str, event: &Arc<Event>, retry: bool) {
        let context = &self.context;
        let Some(worker) = self.workers.get_mut(name) else {
            tracing::warn!(action = %name, device = %event.device, event = %event.kind, event_id = %event.id,
                "an event is owed to an action no longer configured; dropped");
            context.done(name, event);
            return;
        };
        if !worker.spec.runs_on(event.kind) {
            context.done(name, event);
            return;
        }
        match worker.queue.try_send(Job::Event(Arc::clone(event))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) if retry => {
                // Its worker died since the last look: restart it, then retry.
                self.reap();
                self.route_to(name, event, false);
            }
            Err(e) => {
                worker.dropped += 1;
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "the action's queue was full",
                    mpsc::error::TrySendError::Closed(_) => "the action's worker is not running",
                };
                context.metrics.action_dropped.get_or_create(&ActionLabel { action: name.to_string() }).inc();
                tracing::error!(
                    action = %name,
                    device = %event.device,
                    event = %event.kind,
                    event_id = %event.id,
                    dropped_total = worker.dropped,
                    reason,
                    file = %context.state_dir.join(dead_letter::FILE_NAME).display(),
                    "action could not take the event; dead-lettered for this action"
                );
                context.dead_letter(Record::new(name, &event.id, &[event], reason));
                context.done(name, event);
            }
        }
    }

    /// Collects workers that ended; one that panicked is logged, counted
    /// and started again (what it held stays owed until the next start).
    fn reap(&mut self) {
        let mut restart = false;
        while let Some(ended) = self.tasks.try_join_next_with_id() {
            let Err(e) = ended else { continue };
            let Some(name) = self.workers.iter().find(|(_, w)| w.task == e.id()).map(|(n, _)| n.clone()) else {
                continue;
            };
            self.workers.remove(&name);
            if e.is_panic() {
                self.context.metrics.action_panics.get_or_create(&ActionLabel { action: name.clone() }).inc();
                tracing::error!(action = %name, error = %e,
                    "the action's worker panicked; starting it again (events it held are sent at the next start)");
                restart = true;
            }
        }
        if restart {
            self.reconcile();
        }
    }

    /// Starts workers for new or changed actions; removed or changed ones
    /// get their queue closed and finish what they hold.
    fn reconcile(&mut self) {
        let builtin = ActionSpec { kind: ActionKind::Log, on: EventKind::ALL.to_vec() };
        let config = Arc::clone(&self.config);
        let wanted: HashMap<&str, &ActionSpec> = std::iter::once((BUILTIN_LOG, &builtin))
            .chain(config.actions.iter().map(|(n, s)| (n.as_str(), s)))
            .collect();
        let metrics = &self.context.metrics;
        for gone in self.workers.keys().filter(|name| !wanted.contains_key(name.as_str())) {
            metrics.action_queue_depth.remove(&ActionLabel { action: gone.clone() });
        }
        metrics.actions_known(wanted.keys().copied());
        self.workers.retain(|name, worker| wanted.get(name.as_str()) == Some(&&worker.spec));
        for (name, spec) in wanted {
            if self.workers.contains_key(name) {
                continue;
            }
            let (queue, jobs) = mpsc::channel::<Job>(QUEUE_PER_ACTION);
            let (n, ctx) = (name.to_string(), self.context.clone());
            let tasks = &mut self.tasks;
            let handle = match &spec.kind {
                ActionKind::Log => tasks.spawn(log::run(n, ctx, jobs)),
                ActionKind::Webhook(w) => tasks.spawn(webhook::run(n, (**w).clone(), ctx, jobs)),
                ActionKind::Reconnect(r) => tasks.spawn(reconnect::run(n, r.clone(), ctx, jobs)),
                ActionKind::Exec(e) => tasks.spawn(exec::run(n, e.clone(), ctx, jobs)),
                ActionKind::Publish(p) => tasks.spawn(publish::run(n, p.clone(), ctx, jobs)),
            };
            let worker = Worker { spec: spec.clone(), queue, task: handle.id(), dropped: 0 };
            self.workers.insert(name.to_string(), worker);
        }
    }
}
