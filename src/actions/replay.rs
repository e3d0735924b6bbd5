//! `willwatch dead-letter replay`: what actions gave up on, sent again.
//! One attempt per record with the record's original id (receivers that
//! deduplicate see the same delivery); what was delivered is removed from
//! the dead-letter file, the rest kept. It needs the action in the config,
//! and only webhook deliveries can be replayed from the command line
//! (other kinds are listed and kept).

use crate::config::{ActionKind, Config};
use crate::dead_letter::command::{self, DeadLetterError, Filter};
use crate::dead_letter::{self, Record};
use crate::event::Event;

/// What became of one record in a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed(String),
    /// Not replayable from here: why.
    Kept(String),
}

/// Sends the records the filter takes again, removes the delivered ones;
/// every record with what became of it.
pub async fn replay(config: &Config, filter: &Filter) -> Result<Vec<(Record, Outcome)>, DeadLetterError> {
    let records = command::list(&config.state_dir, filter)?;
    let http = super::http_client();
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        let outcome = replay_one(config, &http, &record).await;
        results.push((record, outcome));
    }
    let delivered: Vec<Record> =
        results.iter().filter(|(_, o)| *o == Outcome::Delivered).map(|(r, _)| r.clone()).collect();
    if !delivered.is_empty() {
        dead_letter::remove(&config.state_dir, &delivered)
            .map_err(|source| DeadLetterError::Rewrite { dir: config.state_dir.clone(), source })?;
    }
    Ok(results)
}

async fn replay_one(config: &Config, http: &reqwest::Client, record: &Record) -> Outcome {
    let Some(spec) = config.actions.get(&record.action) else {
        return Outcome::Kept(format!("no action `{}` in the config", record.action));
    };
    let ActionKind::Webhook(webhook) = &spec.kind else {
        return Outcome::Kept("only webhook deliveries are replayed from the command line".into());
    };
    let events: Option<Vec<Event>> = record.events.iter().map(Event::from_json).collect();
    match events {
        Some(events) if !events.is_empty() => {
            match super::webhook::resend(&record.action, webhook, http, &record.id, events).await {
                Ok(()) => Outcome::Delivered,
                Err(e) => Outcome::Failed(e),
            }
        }
        _ => Outcome::Kept("the record's events cannot be read".into()),
    }
}
