//! `cargo run --example demo`: willwatch watching a small simulated plant,
//! with nothing installed but Rust.
//!
//! It starts an embedded MQTT broker on a free port, six simulated devices
//! that lose power and come back at random (real MQTT clients with retained
//! births and wills), and the real daemon with a demo config. Watch the log
//! say which device went offline and for how long; Ctrl-C stops it all.

mod embedded_broker;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};

const DEVICES: [&str; 6] = ["pump-1", "pump-2", "valve-3", "fan-4", "meter-5", "chiller-6"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    embedded_broker::start(port);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let dir = std::env::temp_dir().join(format!("willwatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("willwatch.toml");
    std::fs::write(&config, demo_config(port))?;

    // The embedded broker logs through the same subscriber; keep its chatter out.
    willwatch::logging::init(willwatch::logging::Format::Text, Some("info,rumqttd=off"))?;
    println!("willwatch demo: broker on 127.0.0.1:{port}, config {}", config.display());
    println!("six devices under plant/<id>/status drop off and come back at random; Ctrl-C to stop.\n");
    for id in DEVICES {
        tokio::spawn(simulate(port, id));
    }
    willwatch::daemon::run(&config).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn demo_config(port: u16) -> String {
    format!(
        r#"[broker]
url = "mqtt://127.0.0.1:{port}"
client_id = "willwatch-demo"
keep_alive = "5s"

[presence]
topic = "willwatch/demo/status"

[[device]]
topic = "plant/{{id}}/status"
"#
    )
}

/// One device: online with a retained birth and a retained will, then
/// "loses power" (drops its connection, so the broker sends the will),
/// stays dark a few seconds and comes back, for ever.
async fn simulate(port: u16, id: &'static str) {
    let topic = format!("plant/{id}/status");
    loop {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_last_will(LastWill::new(&topic, "offline", QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(options, 8);
        let _ = client.publish(&topic, QoS::AtLeastOnce, true, "online").await;
        let up = Duration::from_millis(rand::rng().random_range(4_000..20_000));
        let _ = tokio::time::timeout(up, async { while eventloop.poll().await.is_ok() {} }).await;
        drop(eventloop);
        let down = Duration::from_millis(rand::rng().random_range(2_000..8_000));
        tokio::time::sleep(down).await;
    }
}
