//! `cargo run --example demo`: willwatch watching a small simulated plant,
//! with nothing installed but Rust.
//!
//! It starts an embedded MQTT broker on a free port, a local webhook
//! receiver that prints what it gets, eighteen simulated devices (real MQTT
//! clients with retained births and wills) and the real daemon with a demo
//! config. Of the twelve plant devices, eight drop off and come back by
//! themselves; four hang until willwatch's reconnect action sends them a
//! command. Beside them, a mixed fleet as real firmware announces itself:
//! a Tasmota plug, an ESPHome node and a Zigbee2MQTT bridge with three
//! devices behind it (`parent`), whose drop is one alert while its devices
//! are shown offline with the cause and not alerted. The log shows each
//! outage and recovery, the receiver shows each webhook, and a board of
//! who is offline is printed every five seconds. Ctrl-C stops it all.

mod embedded_broker;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

const FLAKY: [&str; 8] = ["pump-1", "pump-2", "valve-3", "fan-4", "meter-5", "chiller-6", "boiler-7", "press-8"];
const HANGING: [&str; 4] = ["robot-9", "robot-10", "conveyor-11", "scale-12"];
/// The Zigbee devices behind the demo's Zigbee2MQTT bridge.
const ZIGBEE: [&str; 3] = ["hall/bulb", "kitchen/floor_light", "plug-3"];

/// How a simulated device announces itself: its status topic and the
/// payloads of its birth and its will.
#[derive(Clone, Copy)]
struct Convention {
    topic: &'static str,
    online: &'static str,
    offline: &'static str,
}

const PLANT: Convention = Convention { topic: "plant/{id}/status", online: "online", offline: "offline" };
const TASMOTA: Convention = Convention { topic: "tele/{id}/LWT", online: "Online", offline: "Offline" };
const ESPHOME: Convention = Convention { topic: "{id}/status", online: "online", offline: "offline" };

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = free_port()?;
    embedded_broker::start(port);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hooks = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", hooks.local_addr()?);
    tokio::spawn(async move { axum::serve(hooks, Router::new().fallback(print_webhook)).await });
    let http_port = free_port()?;

    let dir = std::env::temp_dir().join(format!("willwatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("willwatch.toml");
    std::fs::write(&config, demo_config(port, http_port, &hook_url, &dir))?;

    // The embedded broker logs through the same subscriber; keep its chatter out.
    willwatch::logging::init(willwatch::logging::Format::Text, Some("info,rumqttd=off"))?;
    println!("willwatch demo: broker on 127.0.0.1:{port}, config {}", config.display());
    println!("the live status page: http://127.0.0.1:{http_port}/");
    println!("twelve devices under plant/<id>/status; robot-9, robot-10, conveyor-11 and scale-12");
    println!("stay down until willwatch's reconnect action tells them to come back. Beside them a");
    println!("Tasmota plug, an ESPHome node and a Zigbee2MQTT bridge with three devices: when the");
    println!("bridge drops, one alert for it, its devices shown offline and not alerted. Ctrl-C to stop.\n");
    for id in FLAKY {
        tokio::spawn(simulate(port, id, PLANT, false));
    }
    for id in HANGING {
        tokio::spawn(simulate(port, id, PLANT, true));
    }
    tokio::spawn(simulate(port, "plug-1", TASMOTA, false));
    tokio::spawn(simulate(port, "kitchen-node", ESPHOME, false));
    tokio::spawn(zigbee_bridge(port));
    tokio::spawn(board(http_port));
    willwatch::daemon::run(&config).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn demo_config(port: u16, http_port: u16, hook_url: &str, dir: &std::path::Path) -> String {
    format!(
        r#"state_dir = "{dir}"

[broker]
url = "mqtt://127.0.0.1:{port}"
client_id = "willwatch-demo"
keep_alive = "5s"
settle = "1s"

[presence]
topic = "willwatch/demo/status"

[http]
listen = "127.0.0.1:{http_port}"

[action.hook]
type = "webhook"
url = "{hook_url}"

[action.kick]
type = "reconnect"
topic = "plant/{{id}}/cmd"
payload = "reconnect"
first_after = "3s"
backoff = 2.0
max_attempts = 3
escalate = ["log"]

[[device]]
topic = "plant/{{id}}/status"
actions = ["log", "hook", "kick"]

[[device]]
preset = "tasmota"
actions = ["log", "hook"]

[[device]]
preset = "esphome"
id = "esp-{{id}}"
actions = ["log", "hook"]

[[device]]
id = "z2m-bridge"
topic = "zigbee2mqtt/bridge/state"
state_field = "/state"
actions = ["log", "hook"]

[[device]]
preset = "zigbee2mqtt"
parent = "z2m-bridge"
actions = ["log", "hook"]
"#,
        dir = dir.display()
    )
}

async fn print_webhook(body: Bytes) -> &'static str {
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    println!("  webhook ← {} {}", event["event"].as_str().unwrap_or("?"), event["device"].as_str().unwrap_or("?"));
    "ok"
}

/// Every five seconds: who is offline, from the daemon's `/status`.
async fn board(http_port: u16) {
    let url = format!("http://127.0.0.1:{http_port}/status");
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut offline: Vec<String> = Vec::new();
        let each = |page: &serde_json::Value| {
            let ids = page["devices"].as_array().into_iter().flatten().filter(|d| d["state"] == "offline");
            offline.extend(ids.filter_map(|d| d["id"].as_str()).map(String::from));
        };
        let Ok(doc) = willwatch::status::fetch(&url, Some("offline"), each).await else { continue };
        println!(
            "  ── board: {} online, {} offline {}",
            doc["counts"]["online"],
            doc["counts"]["offline"],
            if offline.is_empty() { String::new() } else { format!("({})", offline.join(", ")) }
        );
    }
}

/// One device, for ever: online with a retained birth and a retained will,
/// then "loses power" (drops its connection, so the broker sends the will).
/// A flaky device comes back after a few seconds; a hanging one only when
/// a reconnect command reaches its (separate) maintenance channel.
async fn simulate(port: u16, id: &'static str, convention: Convention, hangs: bool) {
    let topic = convention.topic.replace("{id}", id);
    let (kick_tx, mut kicked) = tokio::sync::mpsc::channel(1);
    if hangs {
        tokio::spawn(listen_for_commands(port, id, kick_tx));
    }
    loop {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_last_will(LastWill::new(&topic, convention.offline, QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(options, 8);
        let _ = client.publish(&topic, QoS::AtLeastOnce, true, convention.online).await;
        let up = Duration::from_millis(rand::rng().random_range(4_000..20_000));
        let _ = tokio::time::timeout(up, async { while eventloop.poll().await.is_ok() {} }).await;
        drop(eventloop);
        if hangs {
            while kicked.try_recv().is_ok() {}
            let _ = kicked.recv().await;
        } else {
            let down = Duration::from_millis(rand::rng().random_range(2_000..8_000));
            tokio::time::sleep(down).await;
        }
    }
}

/// A Zigbee2MQTT bridge: its state with a will, and its devices'
/// availability, all retained as Zigbee2MQTT publishes them. It goes down
/// every so often (its will says so; its devices' availability stays
/// `online`, as it does when a bridge dies) and comes back.
async fn zigbee_bridge(port: u16) {
    let state = "zigbee2mqtt/bridge/state";
    loop {
        let mut options = MqttOptions::new("zigbee2mqtt", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_last_will(LastWill::new(state, r#"{"state":"offline"}"#, QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let _ = client.publish(state, QoS::AtLeastOnce, true, r#"{"state":"online"}"#).await;
        for name in ZIGBEE {
            let topic = format!("zigbee2mqtt/{name}/availability");
            let _ = client.publish(topic, QoS::AtLeastOnce, true, r#"{"state":"online"}"#).await;
        }
        let up = Duration::from_millis(rand::rng().random_range(10_000..25_000));
        let _ = tokio::time::timeout(up, async { while eventloop.poll().await.is_ok() {} }).await;
        drop(eventloop);
        println!("  zigbee2mqtt bridge loses power");
        let down = Duration::from_millis(rand::rng().random_range(6_000..12_000));
        tokio::time::sleep(down).await;
    }
}

/// The maintenance channel of a hanging device: `plant/<id>/cmd`.
async fn listen_for_commands(port: u16, id: &'static str, kick: tokio::sync::mpsc::Sender<()>) {
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(format!("{id}-maint"), "127.0.0.1", port), 8);
    let _ = client.subscribe(format!("plant/{id}/cmd"), QoS::AtLeastOnce).await;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) if p.payload.as_ref() == b"reconnect" => {
                println!("  {id} got a reconnect command and restarts");
                let _ = kick.try_send(());
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
