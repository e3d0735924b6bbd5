//! Failover: two instances of one `[cluster]` on one broker, the leader
//! SIGKILLed again and again while devices fail. Each round: some devices
//! go offline just before the kill and some right after it (while nobody
//! leads); the standby must take over and every one of those offlines must
//! reach the receiver once by id. Measured: the takeover (kill → the
//! standby says it leads, on `/metrics`), the alert of a device that fails
//! while nobody leads (kill → its webhook), offlines lost, offlines under
//! two ids, and repeats of one id (which receivers drop).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::contestants::Daemon;
use crate::load;

pub struct Run {
    pub failovers: usize,
    pub devices_per_round: usize,
    pub takeover: Vec<Duration>,
    /// Per round, the slowest of the devices that failed after the kill:
    /// kill → its webhook.
    pub alert_during_failover: Vec<Duration>,
    pub lost: usize,
    pub under_two_ids: usize,
    pub repeats: usize,
}

/// Deliveries as the receiver saw them: (device, event, id, arrival).
type Seen = Arc<Mutex<Vec<(String, String, String, Instant)>>>;

pub async fn failover(bin: &Path, failovers: usize, per_round: usize) -> Result<Run, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let url = crate::receiver::serve(move |e, at| {
        let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        sink.lock().unwrap().push((field("device"), field("event"), field("id"), at));
    })
    .await?;
    let devices = 2 * per_round;
    load::publish_retained(broker.port, devices, "online").await?;
    let port = broker.port;
    let start = |instance: &'static str| {
        Daemon::start_config(bin, |state, http| {
            format!(
                "state_dir = \"{}\"\nstate_sync = \"normal\"\n[broker]\nurl = \"mqtt://127.0.0.1:{port}\"\n\
                 settle = \"0s\"\nresync = \"0s\"\nkeep_alive = \"5s\"\n\n[cluster]\nname = \"bench\"\ninstance = \"{instance}\"\n\n\
                 [http]\nlisten = \"{http}\"\n\n[action.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n\n\
                 [[device]]\ntopic = \"bench/{{id}}/status\"\nactions = [\"hook\"]\n",
                state.display()
            )
        })
    };
    let mut instances = [start("a")?, start("b")?];
    let client = reqwest::Client::new();
    let leader_of = |instances: &[Daemon; 2]| {
        let client = client.clone();
        let urls: Vec<String> = instances.iter().map(|d| d.http_address()).collect();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut leading = Vec::new();
                for (i, address) in urls.iter().enumerate() {
                    let text = match client.get(format!("http://{address}/metrics")).send().await {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    if text.lines().any(|l| l == "willwatch_cluster_leader 1") {
                        leading.push(i);
                    }
                }
                if leading.len() == 1 {
                    return Ok(leading[0]);
                }
                if Instant::now() > deadline {
                    return Err(format!("no single leader: {leading:?}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let (publisher, mut eventloop) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("bench-failover", "127.0.0.1", port), 1024);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let say = |device: usize, state: &'static str| {
        let publisher = publisher.clone();
        async move { publisher.publish(load::topic(device), QoS::AtLeastOnce, true, state).await.map_err(|e| e.to_string()) }
    };
    let mut run = Run {
        failovers,
        devices_per_round: devices,
        takeover: Vec::new(),
        alert_during_failover: Vec::new(),
        lost: 0,
        under_two_ids: 0,
        repeats: 0,
    };
    // Wait until both are up and one leads: the standby reports peers.
    let mut leader = leader_of(&instances).await?;
    for instance in &instances {
        instance.wait_metric("willwatch_cluster_peers_up", 2.0).await?;
    }
    for round in 0..failovers {
        eprintln!("failover {}/{failovers}", round + 1);
        let before = seen.lock().unwrap().len();
        for d in 0..per_round {
            say(d, "offline").await?;
        }
        let killed = Instant::now();
        instances[leader].kill();
        for d in per_round..devices {
            say(d, "offline").await?;
        }
        let standby = 1 - leader;
        let takeover = loop {
            let text = instances[standby].metric(&client, "willwatch_cluster_leader ").await;
            if text == Some(1.0) {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(30) {
                return Err("the standby never took over".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        run.takeover.push(takeover);
        let offlines = |seen: &[(String, String, String, Instant)]| {
            let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
            let mut repeats = 0;
            let mut all = HashSet::new();
            for (device, event, id, _) in seen {
                if event == "offline" {
                    repeats += usize::from(!all.insert(id.clone()));
                    ids.entry(device.clone()).or_default().insert(id.clone());
                }
            }
            (ids, repeats)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = seen.lock().unwrap()[before..].to_vec();
            let (ids, _) = offlines(&seen);
            if ids.len() == devices || Instant::now() > deadline {
                break;
            }
            drop(seen);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        instances[leader].restart()?;
        leader = standby;
        // Back online, and the restarted instance in the group again.
        for d in 0..devices {
            say(d, "online").await?;
        }
        let back = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap()[before..].iter().filter(|(_, e, _, _)| e == "online").count() < devices {
            if Instant::now() > back {
                return Err("not every device was notified back online".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for instance in &instances {
            instance.wait_metric("willwatch_cluster_peers_up", 2.0).await?;
        }
        let round_seen = seen.lock().unwrap()[before..].to_vec();
        let (ids, repeats) = offlines(&round_seen);
        run.lost += devices - ids.len();
        run.under_two_ids += ids.values().filter(|i| i.len() > 1).count();
        run.repeats += repeats;
        let slowest = round_seen
            .iter()
            .filter(|(d, e, _, _)| {
                e == "offline"
                    && d.strip_prefix("dev-").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n >= per_round)
            })
            .map(|(_, _, _, at)| at.duration_since(killed))
            .max();
        run.alert_during_failover.extend(slowest);
    }
    pump.abort();
    Ok(run)
}
