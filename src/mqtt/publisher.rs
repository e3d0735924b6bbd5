//! Publishing for actions, through the daemon's own MQTT session.

use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;

use super::Link;
use crate::topic::{TopicError, check_publish_topic};

/// A handle for actions that publish through the daemon's own session.
///
/// Publishing waits (bounded) for the session to be connected: a request
/// queued while disconnected would be dropped with the clean session.
#[derive(Clone)]
pub struct Publisher {
    client: watch::Receiver<Option<AsyncClient>>,
    link: watch::Receiver<Link>,
}

/// How long a publish waits for the broker connection.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker for {0:?}")]
    NotConnected(Duration),
    #[error("the broker session has ended")]
    SessionEnded,
    #[error("topic `{topic}` cannot be published to: {reason}")]
    Topic { topic: String, reason: TopicError },
    #[error(transparent)]
    Client(#[from] rumqttc::ClientError),
}

impl Publisher {
    pub fn new(client: watch::Receiver<Option<AsyncClient>>, link: watch::Receiver<Link>) -> Publisher {
        Publisher { client, link }
    }

    /// Publishes once connected. A topic that MQTT cannot carry (built from
    /// a device id that made it too long, or gave it a wildcard) is refused
    /// here, before it could become a malformed packet.
    pub async fn publish(&self, topic: String, qos: u8, retain: bool, payload: Vec<u8>) -> Result<(), PublishError> {
        check_publish_topic(&topic)
            .map_err(|reason| PublishError::Topic { topic: topic.chars().take(200).collect(), reason })?;
        let mut link = self.link.clone();
        tokio::time::timeout(PUBLISH_WAIT, link.wait_for(|l| l.connected))
            .await
            .map_err(|_| PublishError::NotConnected(PUBLISH_WAIT))?
            .map_err(|_| PublishError::SessionEnded)?;
        let client = self.client.borrow().clone().ok_or(PublishError::SessionEnded)?;
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        Ok(client.publish(topic, qos, retain, payload).await?)
    }
}
