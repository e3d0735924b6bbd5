//! The live status page in a real headless browser (Chromium through
//! chromedriver, from Debian's packages): it loads, lists the devices, a
//! device killed during the test turns offline on the page without a
//! reload, and across a restart of the daemon the page finds it again by
//! itself and goes on. Needs chromedriver; without it the test says SKIPPED, unless
//! `WILLWATCH_TEST_REQUIRE_CHROMIUM=1` (CI) makes that a failure. With
//! `WILLWATCH_SCREENSHOTS=DIR` it also writes the screenshots docs/http.md shows.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::wait::until;
use support::{Broker, Daemon, SimDevice, config};

/// chromedriver in a process group of its own, which takes its browsers
/// with it when dropped (a failed test does not close its session).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, or `None` (skipped) when it is not installed.
async fn chromedriver() -> Option<(Driver, u16)> {
    let port = support::broker::free_port();
    let child = match Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("WILLWATCH_TEST_REQUIRE_CHROMIUM").is_none(),
                "chromedriver is required (WILLWATCH_TEST_REQUIRE_CHROMIUM) but cannot run: {e}"
            );
            eprintln!("SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver)");
            return None;
        }
    };
    let driver = Driver(child);
    support::eventually("chromedriver to listen", support::SOON, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await;
    Some((driver, port))
}

async fn browser(port: u16, width: u32) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", format!("--window-size={width},900")] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session")
}

/// The state the page shows for `device`, if it shows the device.
async fn shown_state(page: &Client, device: &str) -> Option<String> {
    let script = "const tr = document.querySelector(`tr[data-id=\"${CSS.escape(arguments[0])}\"]`); return tr ? tr.dataset.state : null;";
    page.execute(script, vec![json!(device)]).await.ok()?.as_str().map(String::from)
}

async fn wait_shown(page: &Client, device: &str, state: &str, within: Duration) {
    until(&format!("the page to show {device} {state}"), within, async || match shown_state(page, device).await {
        Some(shown) if shown == state => Ok(()),
        shown => Err(format!("{shown:?} in {:?}", page.source().await)),
    })
    .await;
}

/// Waits until `script` returns `true` on the page.
async fn wait_true(page: &Client, what: &str, script: &str) {
    until(what, support::SOON, async || match page.execute(script, vec![]).await {
        Ok(serde_json::Value::Bool(true)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
}

#[tokio::test]
async fn the_page_lists_the_devices_shows_a_killed_one_offline_without_a_reload_and_follows_a_restart() {
    let Some((_driver, port)) = chromedriver().await else { return };
    let broker = Broker::start();
    let devices = "[[device]]\ntopic = \"plant/{id}/status\"\n";
    // Its port stays the same, so the page finds the daemon again after a restart.
    let mut daemon = Daemon::start(&config(&broker, devices));
    daemon.wait_connected().await;
    let pump = SimDevice::connect(broker.port, "pump-7", "plant/pump-7/status", "online", "offline").await;
    let fan = SimDevice::connect(broker.port, "fan-2", "plant/fan-2/status", "online", "offline").await;
    daemon.wait_state("fan-2", "online").await;
    let url = daemon.http_url().await;

    let page = browser(port, 1280).await;
    page.goto(&url).await.unwrap();
    wait_shown(&page, "pump-7", "online", support::SOON).await;
    wait_shown(&page, "fan-2", "online", support::SOON).await;
    assert_eq!(page.title().await.unwrap(), "willwatch");
    // A mark that a reload would wipe.
    page.execute("window.unreloaded = true;", vec![]).await.unwrap();

    pump.kill();
    let killed = std::time::Instant::now();
    wait_shown(&page, "pump-7", "offline", Duration::from_secs(5)).await;
    let took = killed.elapsed();
    assert_eq!(
        page.execute("return window.unreloaded === true;", vec![]).await.unwrap(),
        json!(true),
        "the page reloaded"
    );
    // Offline first, with why and the counts.
    let first = "return document.querySelector('#rows tr')?.dataset.id === 'pump-7';";
    wait_true(&page, "pump-7 at the top", first).await;
    let why = page.find(Locator::Css("tr[data-id=\"pump-7\"] .why")).await.unwrap().text().await.unwrap();
    assert_eq!(why, "will: offline");
    wait_true(&page, "an offline count of 1", "return document.getElementById('n-offline').textContent === '1';").await;
    eprintln!("offline on the page {took:?} after the kill");

    // The filter narrows the list.
    page.find(Locator::Id("filter")).await.unwrap().send_keys("fan").await.unwrap();
    wait_true(&page, "the filter to hide pump-7", "return !document.querySelector('tr[data-id=\"pump-7\"]');").await;
    assert_eq!(shown_state(&page, "fan-2").await.as_deref(), Some("online"));

    if let Some(dir) = std::env::var_os("WILLWATCH_SCREENSHOTS") {
        for (theme, width) in [("light", 1280), ("dark", 1280), ("light", 420)] {
            let shot = browser(port, width).await;
            shot.goto(&format!("{url}/?theme={theme}")).await.unwrap();
            wait_shown(&shot, "pump-7", "offline", support::SOON).await;
            // And its bars painted.
            wait_true(&shot, "the bars painted", "return document.querySelectorAll('.slots i').length > 0;").await;
            let png = shot.screenshot().await.unwrap();
            let name = if width < 800 { format!("page-{theme}-phone.png") } else { format!("page-{theme}.png") };
            std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
            shot.close().await.unwrap();
        }
    }

    // The daemon restarts: the page says so, finds it again by itself, and
    // goes on following transitions.
    page.find(Locator::Id("filter")).await.unwrap().clear().await.unwrap();
    daemon.kill();
    let link = |text: &str| format!("return document.getElementById('link').textContent.{text};");
    wait_true(&page, "the page to say willwatch is gone", &link("includes('not answering')")).await;
    daemon.restart();
    daemon.wait_connected().await;
    wait_true(&page, "the page to find the daemon again", &link("endsWith(': connected')")).await;
    wait_shown(&page, "fan-2", "online", support::SOON).await;
    fan.kill();
    wait_shown(&page, "fan-2", "offline", Duration::from_secs(5)).await;
    assert_eq!(
        page.execute("return window.unreloaded === true;", vec![]).await.unwrap(),
        json!(true),
        "the page reloaded"
    );
    page.close().await.unwrap();
}

#[tokio::test]
async fn a_hundred_thousand_devices_come_a_page_at_a_time_and_do_not_freeze_the_page() {
    let Some((_driver, port)) = chromedriver().await else { return };
    let broker = Broker::start_with(support::BrokerOptions { unlimited_queues: true, ..Default::default() });
    const N: usize = 100_000;
    let topics: Vec<String> = (0..N).map(|i| format!("fleet/d{i:06}/status")).collect();
    let messages: Vec<(&str, Vec<u8>)> = topics.iter().map(|t| (t.as_str(), b"online".to_vec())).collect();
    support::publish_many(broker.port, &messages, true).await;
    let daemon = Daemon::start(&config(&broker, "[[device]]\ntopic = \"fleet/{id}/status\"\n"));
    daemon.wait_connected().await;
    until("the daemon to know every device", Duration::from_secs(60), async || {
        let online = daemon.metric("willwatch_devices{state=\"online\"}").await;
        if online < N as f64 { Err(online) } else { Ok(()) }
    })
    .await;
    let url = daemon.http_url().await;
    let page = browser(port, 1280).await;
    let started = std::time::Instant::now();
    page.goto(&url).await.unwrap();
    let counted = format!("return document.getElementById('n-online').textContent === '{N}';");
    wait_true(&page, &format!("the page to count {N} online"), &counted).await;
    let rows = page.execute("return document.querySelectorAll('#rows tr').length;", vec![]).await.unwrap();
    assert_eq!(rows, json!(100), "one page of rows, not the fleet");
    // The page still answers at once: a script runs within a second.
    let asked = std::time::Instant::now();
    page.execute("return 1;", vec![]).await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1), "the page is busy for {:?}", asked.elapsed());
    eprintln!("{N} devices: counted and first page shown {:?} after loading", started.elapsed());
    page.find(Locator::Id("more")).await.unwrap().click().await.unwrap();
    wait_true(&page, "Show more to show the next page", "return document.querySelectorAll('#rows tr').length === 200;")
        .await;
    page.close().await.unwrap();
}
