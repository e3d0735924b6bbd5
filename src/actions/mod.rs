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
//! Each exposes `run(name, settings, context, jobs)`, the worker loop.

mod dead_letter;
mod exec;
mod log;
mod publish;
mod reconnect;
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{ActionKind, ActionSpec, BUILTIN_LOG, Config};
use crate::event::{Event, EventKind};
use crate::metrics::{ActionLabel, Metrics};
use crate::mqtt::Publisher;
use crate::store::{Ack, Op};

/// Events waiting per action before new ones are dead-lettered: more than
/// a storm of every device of a large fleet (the queue grows only as used).
pub const QUEUE_PER_ACTION: usize = 16_384;

/// What the dispatcher is told (by the state writer, once recorded).
#[derive(Debug)]
pub enum Input {
    Event(Arc<Event>),
    Reload(Arc<Config>),
}

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
}

impl Context {
    pub fn new(
        store: mpsc::WeakSender<Op>,
        acks: mpsc::UnboundedSender<Ack>,
        mqtt: Publisher,
        state_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Context {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("willwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Context { store, acks, mqtt, state_dir, http, metrics }
    }

    /// Decides a new event (an escalation): recorded, then dispatched.
    async fn fire(&self, event: Event) {
        match self.store.upgrade() {
            Some(store) if store.send(Op::Event(event, None)).await.is_ok() => {}
            _ => tracing::warn!("stopping: an escalation was not recorded"),
        }
    }

    /// `action` is done with `event`: it is no longer owed.
    pub fn done(&self, action: &str, event: &Event) {
        // Closed only at the very end of a shutdown: then it stays owed.
        let _ = self.acks.send((event.id.clone(), action.to_string()));
    }
}

/// A running action: its settings and the queue into its worker.
struct Worker {
    spec: ActionSpec,
    queue: mpsc::Sender<Job>,
    dropped: u64,
}

/// Routes events to action workers until `input` closes, then lets every
/// worker drain its queue and returns.
pub async fn dispatch(config: Arc<Config>, context: Context, mut input: mpsc::Receiver<Input>) {
    let mut tasks = JoinSet::new();
    let mut workers = HashMap::new();
    reconcile(&mut workers, &mut tasks, &config, &context);
    while let Some(message) = input.recv().await {
        match message {
            Input::Event(event) => route(&mut workers, event, &context),
            Input::Reload(config) => {
                reconcile(&mut workers, &mut tasks, &config, &context);
                for (name, worker) in &workers {
                    if worker.queue.try_send(Job::Reload(Arc::clone(&config))).is_err() {
                        tracing::warn!(action = %name, "action queue full: this action did not see the reload");
                    }
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(workers);
    while tasks.join_next().await.is_some() {}
}

fn route(workers: &mut HashMap<String, Worker>, event: Arc<Event>, context: &Context) {
    for name in event.actions.iter() {
        let Some(worker) = workers.get_mut(name) else {
            tracing::warn!(action = %name, device = %event.device, event = %event.kind, event_id = %event.id,
                "an event is owed to an action no longer configured; dropped");
            context.done(name, &event);
            continue;
        };
        if !worker.spec.runs_on(event.kind) {
            context.done(name, &event);
            continue;
        }
        if worker.queue.try_send(Job::Event(Arc::clone(&event))).is_err() {
            worker.dropped += 1;
            context.metrics.action_dropped.get_or_create(&ActionLabel { action: name.clone() }).inc();
            tracing::error!(
                action = %name,
                device = %event.device,
                event = %event.kind,
                event_id = %event.id,
                dropped_total = worker.dropped,
                file = %context.state_dir.join(dead_letter::FILE_NAME).display(),
                "action queue full, event dead-lettered for this action"
            );
            dead_letter::append(&context.state_dir, &dead_letter::record(name, &event, "the action's queue was full"));
            context.done(name, &event);
        }
    }
}

/// Starts workers for new or changed actions; removed or changed ones get
/// their queue closed and finish what they hold.
fn reconcile(workers: &mut HashMap<String, Worker>, tasks: &mut JoinSet<()>, config: &Config, context: &Context) {
    let builtin = ActionSpec { kind: ActionKind::Log, on: EventKind::ALL.to_vec() };
    let wanted: HashMap<&str, &ActionSpec> =
        std::iter::once((BUILTIN_LOG, &builtin)).chain(config.actions.iter().map(|(n, s)| (n.as_str(), s))).collect();
    workers.retain(|name, worker| wanted.get(name.as_str()) == Some(&&worker.spec));
    for (name, spec) in wanted {
        if workers.contains_key(name) {
            continue;
        }
        let (queue, jobs) = mpsc::channel::<Job>(QUEUE_PER_ACTION);
        let (n, ctx) = (name.to_string(), context.clone());
        match &spec.kind {
            ActionKind::Log => tasks.spawn(log::run(n, ctx, jobs)),
            ActionKind::Webhook(w) => tasks.spawn(webhook::run(n, w.clone(), ctx, jobs)),
            ActionKind::Reconnect(r) => tasks.spawn(reconnect::run(n, r.clone(), ctx, jobs)),
            ActionKind::Exec(e) => tasks.spawn(exec::run(n, e.clone(), ctx, jobs)),
            ActionKind::Publish(p) => tasks.spawn(publish::run(n, p.clone(), ctx, jobs)),
        };
        workers.insert(name.to_string(), Worker { spec: spec.clone(), queue, dropped: 0 });
    }
}
