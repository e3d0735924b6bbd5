//! Actions: what runs when a device goes offline or comes back.
//!
//! Every configured action gets its own worker task fed by a bounded queue;
//! `dispatch` routes each event to the workers of the actions its device
//! names. A slow action (a hanging webhook, a stuck command) fills only its
//! own queue: further events for it are dropped, counted and logged at
//! error, and every other action and the monitor go on unhindered.
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

/// Events waiting per action before new ones are dropped.
pub const QUEUE_PER_ACTION: usize = 1024;

/// What the dispatcher is told.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    Reload(Arc<Config>),
}

/// What a worker is told.
#[derive(Debug, Clone)]
pub enum Job {
    Event(Arc<Event>),
    Reload(Arc<Config>),
}

/// What workers share: a way back to the dispatcher (for escalations), the
/// daemon's MQTT session, the state directory and one HTTP client.
#[derive(Clone)]
pub struct Context {
    /// Weak, so the dispatcher still ends when the monitor hangs up.
    dispatch: mpsc::WeakSender<Input>,
    mqtt: Publisher,
    state_dir: PathBuf,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(
        dispatch: mpsc::WeakSender<Input>,
        mqtt: Publisher,
        state_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Context {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("willwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Context { dispatch, mqtt, state_dir, http, metrics }
    }

    /// Hands a new event (an escalation) back to the dispatcher.
    async fn fire(&self, event: Event) {
        if let Some(dispatch) = self.dispatch.upgrade() {
            let _ = dispatch.send(Input::Event(event)).await;
        }
    }
}

/// A running action: its settings and the queue into its worker.
struct Worker {
    spec: ActionSpec,
    queue: mpsc::Sender<Job>,
    dropped: u64,
}

impl Worker {
    /// Whether `kind` is for this worker. Reconnect ladders start on offline
    /// and must hear the online that stops them, whatever `on` says.
    fn wants(&self, kind: EventKind) -> bool {
        match self.spec.kind {
            ActionKind::Reconnect(_) => matches!(kind, EventKind::Offline | EventKind::Online),
            _ => self.spec.on.contains(&kind),
        }
    }
}

/// Routes events to action workers until `input` closes, then lets every
/// worker drain its queue and returns.
pub async fn dispatch(config: Arc<Config>, context: Context, mut input: mpsc::Receiver<Input>) {
    let mut tasks = JoinSet::new();
    let mut workers = HashMap::new();
    reconcile(&mut workers, &mut tasks, &config, &context);
    while let Some(message) = input.recv().await {
        match message {
            Input::Event(event) => route(&mut workers, event, &context.metrics),
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

fn route(workers: &mut HashMap<String, Worker>, event: Event, metrics: &Metrics) {
    let event = Arc::new(event);
    for name in event.actions.iter() {
        let Some(worker) = workers.get_mut(name) else {
            continue;
        };
        if !worker.wants(event.kind) {
            continue;
        }
        if worker.queue.try_send(Job::Event(Arc::clone(&event))).is_err() {
            worker.dropped += 1;
            metrics.action_dropped.get_or_create(&ActionLabel { action: name.clone() }).inc();
            tracing::error!(
                action = %name,
                device = %event.device,
                event = %event.kind,
                dropped_total = worker.dropped,
                "action queue full, event dropped for this action"
            );
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
