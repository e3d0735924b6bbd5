//! The `publish` action: the event JSON to a (templated) topic through the
//! daemon's own MQTT session.

use tokio::sync::mpsc;

use super::{Context, Job};
use crate::config::Publish;

pub async fn run(name: String, spec: Publish, context: Context, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let Job::Event(event) = job else { continue };
        let topic = spec.topic.render(&event);
        let body = event.to_json().to_string().into_bytes();
        match context.mqtt.publish(topic.clone(), spec.qos, spec.retain, body).await {
            Ok(()) => {
                context.metrics.action_run(&name, "ok");
                tracing::debug!(action = %name, device = %event.device, event = %event.kind, topic = %topic, "event published");
            }
            Err(e) => {
                context.metrics.action_run(&name, "failed");
                tracing::error!(action = %name, device = %event.device, event = %event.kind, topic = %topic,
                    error = %e, what = "publish_failed", "could not publish the event");
            }
        }
        context.done(&name, &event);
    }
}
