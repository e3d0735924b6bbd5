//! Before a cluster instance joins: is its name held by a live run that is
//! not this one? Two runs under one name (two daemons on one host, a cloned
//! machine) share the client id, so each would take the other's broker
//! session, and each would take the other's claim for an earlier run of
//! its own: they would lead in turn and fire twice.
//!
//! The check uses a clean session of its own (`<client_id>-join`), so the
//! holder's session is never taken. It reads the name's retained presence;
//! when that says up, it asks on `who/<instance>`, and a live holder
//! answers on `here/<instance>` (`Cluster`). An answer within `ANSWER_WAIT`
//! is a twin; none means the holder is gone without its will (its session
//! is taken over, as after a crash). A broker that cannot be reached lets
//! the run join: the check is said to be skipped.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::cluster::Settings;
use crate::cluster::wire::{self, Here, Who};
use crate::config::Broker;

/// How long the check may take when the broker does not answer.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a live holder has to answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// This instance's name is held by a live run.
#[derive(Debug, thiserror::Error)]
#[error(
    "instance name `{instance}` of cluster `{cluster}` is held by a live run on host `{host}` (started {started}): \
     give each instance its own `instance = \"...\"` in [cluster] (it defaults to the host name)"
)]
pub struct Twin {
    pub cluster: String,
    pub instance: String,
    pub host: String,
    pub started: String,
}

/// Checks that no live run holds `cluster.instance`; `offline` is the
/// presence payload that says a member is gone.
pub async fn check(broker: &Broker, cluster: &Settings, offline: &str) -> Result<(), Twin> {
    let asking = wire::asking(&cluster.host);
    match tokio::time::timeout(CONNECT_WAIT + ANSWER_WAIT, ask(broker, cluster, offline, &asking)).await {
        Ok(Ok(answer)) => answer.map_or(Ok(()), |here| Err(twin(cluster, here))),
        Ok(Err(e)) => {
            tracing::warn!(broker = %broker.url, error = %e, "cannot check whether another run holds this instance name; joining");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(broker = %broker.url, "the broker did not answer the check for another run of this instance name; joining");
            Ok(())
        }
    }
}

fn twin(cluster: &Settings, here: Here) -> Twin {
    let started = std::time::UNIX_EPOCH + Duration::from_micros(here.run);
    Twin {
        cluster: cluster.name.clone(),
        instance: cluster.instance.clone(),
        host: here.host,
        started: humantime::format_rfc3339_seconds(started).to_string(),
    }
}

/// The holder's answer, if a live one answered.
async fn ask(
    broker: &Broker,
    cluster: &Settings,
    offline: &str,
    asking: &str,
) -> Result<Option<Here>, rumqttc::ConnectionError> {
    let member = wire::member_topic(&cluster.name, &cluster.instance);
    let who = wire::who_topic(&cluster.name, &cluster.instance);
    let here = wire::here_topic(&cluster.name, &cluster.instance);
    let options = super::connection(broker, &format!("{}-join", broker.client_id));
    let (client, mut events) = AsyncClient::new(options, 16);
    let filters = [&member, &who, &here].map(|t| rumqttc::SubscribeFilter::new(t.to_string(), QoS::AtLeastOnce));
    let question = serde_json::to_vec(&Who { asking: asking.to_string() }).expect("a question always serialises");
    // The name's presence says up: a holder may be alive.
    let mut up = false;
    let mut answer_by: Option<tokio::time::Instant> = None;
    let answer = loop {
        let polled = match answer_by {
            Some(by) => match tokio::time::timeout_at(by, events.poll()).await {
                Ok(polled) => polled,
                Err(_) => break None,
            },
            None => events.poll().await,
        };
        match polled? {
            Event::Incoming(Packet::ConnAck(_)) => {
                let _ = client.try_subscribe_many(filters.clone());
            }
            Event::Incoming(Packet::SubAck(_)) => {
                let _ = client.try_publish(&who, QoS::AtLeastOnce, false, question.clone());
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == member => {
                up = !p.payload.is_empty() && p.payload != offline.as_bytes();
            }
            // Our own question is back: the retained presence came before
            // it. Nobody holds the name, or its holder has this long to say
            // so.
            Event::Incoming(Packet::Publish(p)) if p.topic == who && p.payload == question => {
                if !up {
                    break None;
                }
                answer_by.get_or_insert(tokio::time::Instant::now() + ANSWER_WAIT);
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == here => {
                if let Ok(answer) = serde_json::from_slice::<Here>(&p.payload)
                    && answer.asking == asking
                {
                    break Some(answer);
                }
            }
            _ => {}
        }
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), async { while events.poll().await.is_ok() {} }).await;
    Ok(answer)
}
