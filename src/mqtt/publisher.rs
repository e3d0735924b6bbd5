//! Publishing for actions, through the daemon's own MQTT session.

use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;

use super::Link;

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

impl Publisher {
    pub fn new(client: watch::Receiver<Option<AsyncClient>>, link: watch::Receiver<Link>) -> Publisher {
        Publisher { client, link }
    }

    pub async fn publish(&self, topic: String, qos: u8, retain: bool, payload: Vec<u8>) -> Result<(), String> {
        let mut link = self.link.clone();
        tokio::time::timeout(PUBLISH_WAIT, link.wait_for(|l| l.connected))
            .await
            .map_err(|_| format!("not connected to the broker for {PUBLISH_WAIT:?}"))?
            .map_err(|_| "the broker session has ended".to_string())?;
        let client = self.client.borrow().clone().ok_or("no broker session")?;
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        client.publish(topic, qos, retain, payload).await.map_err(|e| e.to_string())
    }
}
