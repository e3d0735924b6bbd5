//! Actions: what runs when a device goes offline or comes back.
//!
//! `Action` is the small interface (one enum, one arm per kind, each kind in
//! its own file); `dispatch` is the task that routes each event to the
//! actions its device names, through one bounded queue and one worker task
//! per action, so a slow action delays only itself and never the monitor.
//! A full queue drops the event for that action, counted and logged at
//! error, instead of growing without bound.

mod log;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{ActionKind, ActionSpec, BUILTIN_LOG, Config};
use crate::event::{Event, EventKind};

/// Events waiting per action before new ones are dropped.
pub const QUEUE_PER_ACTION: usize = 1024;

/// One configured action, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Log(log::Log),
}

impl Action {
    fn new(name: &str, spec: &ActionSpec) -> Action {
        match spec.kind {
            ActionKind::Log => Action::Log(log::Log::new(name)),
        }
    }

    async fn run(&self, event: &Event) {
        match self {
            Action::Log(a) => a.run(event),
        }
    }
}

/// What the dispatcher is told.
#[derive(Debug)]
pub enum Input {
    Event(Event),
    Reload(Arc<Config>),
}

/// A running action: its settings and the queue into its worker.
struct Worker {
    spec: ActionSpec,
    queue: mpsc::Sender<Arc<Event>>,
    dropped: u64,
}

/// Routes events to action workers until `input` closes, then lets every
/// worker drain its queue and returns.
pub async fn dispatch(config: Arc<Config>, mut input: mpsc::Receiver<Input>) {
    let mut tasks = JoinSet::new();
    let mut workers = HashMap::new();
    reconcile(&mut workers, &mut tasks, &config);
    while let Some(message) = input.recv().await {
        match message {
            Input::Event(event) => route(&mut workers, event),
            Input::Reload(config) => reconcile(&mut workers, &mut tasks, &config),
        }
    }
    drop(workers);
    while tasks.join_next().await.is_some() {}
}

fn route(workers: &mut HashMap<String, Worker>, event: Event) {
    let event = Arc::new(event);
    for name in event.actions.iter() {
        let Some(worker) = workers.get_mut(name) else {
            continue;
        };
        if !worker.spec.on.contains(&event.kind) {
            continue;
        }
        if worker.queue.try_send(Arc::clone(&event)).is_err() {
            worker.dropped += 1;
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

/// Starts workers for new or changed actions and lets removed ones drain.
fn reconcile(workers: &mut HashMap<String, Worker>, tasks: &mut JoinSet<()>, config: &Config) {
    let builtin = ActionSpec {
        kind: ActionKind::Log,
        on: EventKind::ALL.to_vec(),
    };
    let wanted: HashMap<&str, &ActionSpec> = std::iter::once((BUILTIN_LOG, &builtin))
        .chain(config.actions.iter().map(|(n, s)| (n.as_str(), s)))
        .collect();
    workers.retain(|name, worker| wanted.get(name.as_str()) == Some(&&worker.spec));
    for (name, spec) in wanted {
        if workers.contains_key(name) {
            continue;
        }
        let (queue, mut jobs) = mpsc::channel::<Arc<Event>>(QUEUE_PER_ACTION);
        let action = Action::new(name, spec);
        tasks.spawn(async move {
            while let Some(event) = jobs.recv().await {
                action.run(&event).await;
            }
        });
        workers.insert(
            name.to_string(),
            Worker {
                spec: spec.clone(),
                queue,
                dropped: 0,
            },
        );
    }
}
