//! A crash-looping broker: mosquitto is SIGKILLed and started again five
//! times at seeded random moments (the seed is printed;
//! `WILLWATCH_FAULT_SEED=<n>` repeats a run), while devices that reconnect
//! by themselves are connected. After each start willwatch is back within
//! a quarter of the outage (half a second at least) and never takes the
//! loop for a client id clash; `broker_down` fires only for an outage
//! longer than `broker_alert_after`, and its `broker_up` says how long that
//! outage was. No device is notified.
//!
//! The broker stays up 6–10 s after willwatch is back each time: a
//! connection counts as lasting (it ends an outage, resets the backoff and
//! the bound on it) from 5 s; over shorter ones the outages merge and the
//! backoff keeps growing, by design.

mod support;

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::Value;
use support::{Broker, BrokerOptions, Daemon, LiveDevice, SENTINEL, config, eventually, sync_with_sentinel};
use tokio::time::Instant;

const ALERT_AFTER: &str = "3s";
/// A long outage lasts this many milliseconds, well past `ALERT_AFTER`...
const LONG: std::ops::Range<u64> = 4500..7000;
/// ...a short one this many, well under it with the reconnect added.
const SHORT: std::ops::Range<u64> = 300..1500;
const DEVICES: usize = 10;

/// How soon after the broker listens again, `down` after it crashed,
/// willwatch is back: its backoff waits at most a quarter of the time
/// since the last lasting connection ended, and half a second at least;
/// the rest is the connect itself and the test noticing it.
fn back_within(down: Duration) -> Duration {
    (down / 4).max(Duration::from_millis(500)) + Duration::from_millis(500)
}

fn connects(daemon: &Daemon) -> usize {
    daemon.logs(|l| l["what"] == "broker_connected").len()
}

/// The built-in log action's `broker_down` or `broker_up` events.
fn broker_events(daemon: &Daemon, event: &str) -> Vec<Value> {
    daemon.logs(|l| l["action"] == "log" && l["event"] == event)
}

/// Crashes the broker five times, each outage long or short as `kinds`
/// draws them, and checks after each what willwatch made of it.
async fn crash_loop(kinds: impl FnOnce(&mut rand::rngs::StdRng) -> [bool; 5]) {
    let (seed, mut rng) = support::fault_seed("crash loop");
    let long = kinds(&mut rng);
    let Some(mut broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let text = config(&broker, &format!("[[device]]\ntopic = \"fleet/{{id}}/status\"\n{SENTINEL}")).replace(
        "settle = \"0s\"\n",
        &format!("settle = \"0s\"\nbroker_alert_after = \"{ALERT_AFTER}\"\nactions = [\"log\"]\n"),
    );
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let devices: Vec<LiveDevice> = (0..DEVICES)
        .map(|i| LiveDevice::start(broker.port, &format!("d{i:02}"), &format!("fleet/d{i:02}/status")))
        .collect();
    eventually("every device online", Duration::from_secs(10), || {
        let online = daemon.logs(|l| l["what"] == "device_state" && l["state"] == "online").len();
        (online >= DEVICES).then_some(())
    })
    .await;

    for (i, &long) in long.iter().enumerate() {
        let context = format!("seed {seed}, outage {i} ({})", if long { "long" } else { "short" });
        let down = Duration::from_millis(rng.random_range(if long { LONG } else { SHORT }));
        let up = Duration::from_millis(rng.random_range(6000..10000));
        let connections = connects(&daemon);
        let (downs_before, ups_before) =
            (broker_events(&daemon, "broker_down").len(), broker_events(&daemon, "broker_up").len());
        let killed = Instant::now();
        broker.stop_with("KILL");
        tokio::time::sleep(down).await;
        broker.start_again();
        let listening = Instant::now();
        let back = eventually("willwatch back", Duration::from_secs(15), || {
            (connects(&daemon) > connections).then(Instant::now)
        })
        .await;
        eprintln!(
            "{context}: broker down {:?}, willwatch back {:?} after it listened",
            listening - killed,
            back - listening
        );
        let bound = back_within(listening - killed);
        assert!(back - listening <= bound, "{context}: back {:?} after the broker, over {bound:?}", back - listening);
        if long {
            // Once the connection has lasted 5 s, with how long it was down.
            let event = eventually("broker_up", Duration::from_secs(8), || {
                broker_events(&daemon, "broker_up").get(ups_before).cloned()
            })
            .await;
            let down_for = event["down_for_s"].as_f64().expect("down_for_s");
            let seen = (back - killed).as_secs_f64();
            assert!(
                (down_for - seen).abs() < 0.5,
                "{context}: down_for_s {down_for} for {seen:.3} s from kill to back"
            );
            let real = (listening - killed).as_secs_f64();
            eprintln!("{context}: broker_up says down_for_s {down_for}");
            assert!(
                down_for >= real - 0.1 && down_for <= real + bound.as_secs_f64(),
                "{context}: down_for_s {down_for} for an outage of {real:.3} s"
            );
        }
        tokio::time::sleep_until(back + up).await;
        // What the outage was in fact: a broker slow to start again (a
        // loaded machine) can make a short one long. Near the threshold
        // either verdict is right, but never two.
        let alert_after = humantime::parse_duration(ALERT_AFTER).unwrap();
        let margin = Duration::from_millis(300);
        let expected: &[usize] = if listening - killed > alert_after + margin {
            &[1]
        } else if back - killed < alert_after - margin {
            &[0]
        } else {
            &[0, 1]
        };
        if long {
            assert_eq!(expected, &[1], "{context}: a long outage is long");
        }
        let downs = broker_events(&daemon, "broker_down").len() - downs_before;
        assert!(expected.contains(&downs), "{context}: broker_down fired {downs} times\n{}", daemon.dump());
        let ups = broker_events(&daemon, "broker_up").len() - ups_before;
        assert_eq!(ups, downs, "{context}: broker_up fired {ups} times after {downs} broker_down\n{}", daemon.dump());
    }

    sync_with_sentinel(&broker, &daemon, &[]).await;
    let clash = daemon.logs(|l| l["times"].is_u64());
    assert!(clash.is_empty(), "seed {seed}: a crash loop is no client id clash: {clash:?}");
    let notified = daemon.logs(|l| {
        l["action"] == "log" && l["device"].as_str().is_some_and(|d| d != "sentinel") && l["event"].is_string()
    });
    assert!(notified.is_empty(), "seed {seed}: no device notified: {notified:?}");
    assert!(devices.iter().all(|d| d.connects() > long.len()), "seed {seed}: the devices came back each time");
    assert_eq!(connects(&daemon), long.len() + 1, "seed {seed}: one connection per broker start");
}

#[tokio::test]
async fn a_crash_looping_broker_is_found_again_within_seconds_and_only_its_long_outages_fire_broker_down() {
    crash_loop(|rng| {
        let mut long = [true, true, false, false, rng.random_bool(0.5)];
        long.shuffle(rng);
        long
    })
    .await;
}

#[tokio::test]
async fn a_crash_looping_broker_whose_outages_are_all_shorter_than_broker_alert_after_fires_no_broker_down() {
    crash_loop(|_| [false; 5]).await;
}
