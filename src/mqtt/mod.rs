//! The broker session: owns rumqttc's `EventLoop` and nothing else polls it.
//!
//! It connects with the daemon's own retained will, publishes the retained
//! birth after every CONNACK, (re)subscribes every watched filter after
//! every CONNACK (a clean session forgets them) at a pace the broker can
//! deliver (`subscriptions.rs`), re-reads retained states when the monitor
//! asks, follows filter changes from reloads, reconnects with backoff, and
//! forwards every message to the monitor, acknowledging a live QoS 1
//! message once what it decided is committed (`acks.rs`). On shutdown it publishes its own retained offline, waits for the
//! PUBACK (bounded) and disconnects cleanly, because a clean DISCONNECT
//! suppresses the will.
//!
//! Before a `[cluster]` run joins, `twin.rs` checks on a connection of its
//! own that no live run holds its instance name.
//!
//! It never awaits a client call: rumqttc's request channel is drained by
//! this very loop, so an awaited `publish` here deadlocks once it fills.
//! Requests are made with `try_*` and a full channel is logged.

mod acks;
mod nudges;
mod publisher;
mod rebirths;
mod subscriptions;
pub mod twin;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    StateError, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Broker, Presence};
use crate::connection::{CLASH, YOUNG, probe_topic};
use crate::metrics::Metrics;
use crate::throttle::Throttle;
use acks::Acks;
pub use acks::Mark;
use nudges::Nudges;
pub use publisher::Publisher;
use rebirths::Rebirths;
use subscriptions::Subscriptions;

/// Requests rumqttc may queue before `try_*` calls fail.
const REQUEST_CAPACITY: usize = 4096;
/// The largest packet MQTT allows. rumqttc drops the connection on a
/// packet over its limit, and the broker then replays the same retained
/// message at every reconnect, for ever: so every packet is read whole, and
/// one whose payload is over `MAX_PAYLOAD` is dropped here instead.
const MAX_INCOMING_PACKET: usize = 268_435_455 + 5;
/// Payloads above this are dropped, counted and logged with their topic.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// How often, at most, dropped oversized messages are logged.
const OVERSIZED_LOG_EVERY: Duration = Duration::from_secs(10);
const MAX_OUTGOING_PACKET: usize = 1 << 20;
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long shutdown waits for the broker to acknowledge our offline.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where mosquitto (and brokers like it) publish how long they have run.
const UPTIME_TOPIC: &str = "$SYS/broker/uptime";

/// What the session tells whoever watches the devices (the monitor).
#[derive(Debug)]
pub enum Inbound {
    /// A CONNACK: the retained states are about to replay. Whether the
    /// broker still had our session (what it queued for us comes now),
    /// whether it restarted since the last connection (it refused one), and
    /// whether we fell behind meanwhile (this process stalled, or the
    /// broker's answer to our keep-alive never came): then the probes lost
    /// with the connection say nothing of the broker.
    Connected {
        session_present: bool,
        restarted: bool,
        behind: bool,
    },
    /// The broker's uptime says it started after our last connection.
    Restarted {
        session_present: bool,
    },
    /// Probe `n` of this connection came back (0: the one sent at the
    /// connect, behind everything the broker had queued for us).
    Probed(u64),
    /// Every subscription of this connection is acknowledged.
    Subscribed,
    Disconnected,
    Message {
        topic: String,
        payload: bytes::Bytes,
        /// A retained state (a replay), not one published just now or
        /// queued for us while we were away.
        retained: bool,
        /// Sent again: a message an earlier connection (or run) got and
        /// did not acknowledge.
        redelivered: bool,
        /// Its place in the order, when it waits for its commit to be
        /// acknowledged (QoS 1): say so through `Wiring::committed`.
        mark: Option<Mark>,
    },
}

/// What the monitor asks of the session.
#[derive(Debug)]
pub enum Ask {
    /// Send probe `n` through the broker (`Inbound::Probed` when it is back).
    Probe(u64),
    /// Re-read the retained states of these exact topics.
    Reread(Vec<String>),
    /// Ask Sparkplug edge nodes for a rebirth, on these command topics.
    Rebirth(Vec<String>),
    /// Publish at QoS 1 (a cluster's messages); queued while the link is
    /// down, sent when it is back.
    Publish { topic: String, payload: Vec<u8>, retain: bool },
}

/// The session's link to the broker, for status lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub connected: bool,
    pub since: SystemTime,
    /// Connections made so far, the first included.
    pub connects: u64,
    /// The broker still had our session at the last connect.
    pub session_present: bool,
    /// Connects where a persistent session was expected and gone.
    pub sessions_lost: u64,
}

/// What a session is connected to on the daemon's side.
pub struct Wiring {
    /// The filters to subscribe; changes on reload.
    pub filters: watch::Receiver<Vec<String>>,
    /// Where messages go.
    pub inbound: mpsc::Sender<Inbound>,
    /// Where the link state is reported.
    pub link: watch::Sender<Link>,
    /// Where the session's client is offered to publishers.
    pub client: watch::Sender<Option<AsyncClient>>,
    /// Re-reads and rebirth requests, from the monitor.
    pub asks: mpsc::Receiver<Ask>,
    /// How far what the messages decided is committed (a `Mark`'s `n`).
    pub committed: watch::Receiver<u64>,
    /// The last mark an earlier session gave (0 for the first).
    pub marks_after: u64,
    pub metrics: Arc<Metrics>,
}

pub struct Session {
    broker: Broker,
    presence: Presence,
    filters: watch::Receiver<Vec<String>>,
    inbound: mpsc::Sender<Inbound>,
    link: watch::Sender<Link>,
    client: watch::Sender<Option<AsyncClient>>,
    asks: mpsc::Receiver<Ask>,
    committed: watch::Receiver<u64>,
    marks_after: u64,
    metrics: Arc<Metrics>,
}

impl Session {
    pub fn new(broker: Broker, presence: Presence, wiring: Wiring) -> Session {
        Session {
            broker,
            presence,
            filters: wiring.filters,
            inbound: wiring.inbound,
            link: wiring.link,
            client: wiring.client,
            asks: wiring.asks,
            committed: wiring.committed,
            marks_after: wiring.marks_after,
            metrics: wiring.metrics,
        }
    }

    /// Runs until `cancel` fires, then says goodbye to the broker. Returns
    /// the request queue for the next session, and the last mark given.
    pub async fn run(mut self, cancel: CancellationToken) -> (mpsc::Receiver<Ask>, u64) {
        // The moment of the connection the will is for (a Sparkplug host's
        // STATE carries it in both its birth and its will).
        let mut stamp = crate::sparkplug::timestamp_ms(SystemTime::now());
        let mut mqtt_options = options(&self.broker, &self.presence, stamp);
        mqtt_options.set_manual_acks(true);
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
        // A probe goes out right behind the acknowledgement of the will it
        // confirms: Nagle would hold it for the broker's delayed ACK (40 ms).
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        self.client.send_replace(Some(client.clone()));
        let mut subscriptions = Subscriptions::default();
        let mut rebirths = Rebirths::default();
        let mut acks = Acks::after(self.marks_after);
        let mut subscribed: BTreeSet<String> = self.filters.borrow_and_update().iter().cloned().collect();
        let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        let mut connected = false;
        // When the current connection's CONNACK came.
        let mut connected_at = Instant::now();
        // Connections in a row that died within `CLASH`.
        let mut died_young = 0u32;
        // When the last connection that lasted ended (or the run began):
        // the backoff never waits longer than a quarter of the time since,
        // so a broker that crash-loops is not left alone for long once up.
        let mut stable_until = Instant::now();
        let mut oversized = Throttle::new(OVERSIZED_LOG_EVERY);
        // Probes carry this run's id and the connection they were sent on:
        // one queued for us before a restart never counts for a later one.
        let probe_topic = probe_topic(&self.broker.client_id);
        let run = crate::event::new_id();
        let mut connection = 0u64;
        // Signs of a broker restart between two connections: a refused
        // connection (nothing listened), or its uptime, read once a connect.
        let mut refused = false;
        let mut previous_connack: Option<Instant> = None;
        // The uptime is asked for after the watched topics, alone: some
        // brokers (rumqttd) close the connection on a `$SYS` filter, and
        // then it is not asked for again.
        let mut uptime = Uptime::default();
        let mut nudges = Nudges::default();
        // Beside the session, not in its `select!`: a tick there would
        // cancel a connect under way.
        // When this process was last seen to have stalled (`watch_stalls`).
        let last_stall: Arc<Mutex<Option<Instant>>> = Arc::default();
        tokio::spawn(watch_stalls(Arc::clone(&last_stall), cancel.clone()));
        // When the last connection went, and whether its keep-alive went
        // unanswered: with the next CONNACK, whether we fell behind.
        let mut went: Option<(Instant, bool)> = None;
        let mut session_present = false;
        // Between a CONNACK and the last SUBACK of its subscriptions.
        let mut settling = false;
        loop {
            let step_at = subscriptions.due().filter(|_| connected).map(tokio::time::Instant::from_std);
            let rebirth_at = rebirths.due().filter(|_| connected).map(tokio::time::Instant::from_std);
            let nudge_at = nudges.due().filter(|_| connected).map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = sleep_until(step_at) => subscriptions.step(&client),
                () = sleep_until(rebirth_at) => rebirths.step(&client),
                () = sleep_until(nudge_at) => {
                    answer_probe(&client, &probe_topic);
                    nudges.nudged(Instant::now());
                }
                Some(ask) = self.asks.recv() => match ask {
                    Ask::Probe(n) if connected => {
                        probe(&client, &probe_topic, &run, connection, n);
                        nudges.probe_sent(n, Instant::now());
                    }
                    Ask::Reread(topics) if connected => {
                        tracing::debug!(topics = topics.len(), "re-reading retained states");
                        subscriptions.resync(topics, &subscribed);
                    }
                    Ask::Rebirth(topics) if connected => rebirths.extend(topics),
                    Ask::Publish { topic, payload, retain } => {
                        if let Err(e) = client.try_publish(&topic, QoS::AtLeastOnce, retain, payload) {
                            tracing::error!(topic = %topic, error = %e, "could not queue a cluster message");
                        }
                    }
                    _ => {}
                },
                Ok(()) = self.committed.changed() => {
                    acks.release(*self.committed.borrow_and_update());
                    self.acknowledge(&client, &mut acks);
                }
                Ok(()) = self.filters.changed() => {
                    let wanted: BTreeSet<String> = self.filters.borrow_and_update().iter().cloned().collect();
                    if connected {
                        subscriptions.subscribe(wanted.difference(&subscribed).cloned().collect());
                        subscriptions.step(&client);
                        settling = !self.report_subscribed(&subscriptions, wanted.len()).await;
                        for gone in subscribed.difference(&wanted) {
                            if let Err(e) = client.try_unsubscribe(gone.clone()) {
                                tracing::error!(topic = %gone, error = %e, "could not queue unsubscribe");
                            }
                        }
                    }
                    subscribed = wanted;
                }
                polled = eventloop.poll() => {
                    // What rumqttc's full queue refused last time goes now.
                    self.acknowledge(&client, &mut acks);
                    match polled {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        connected = true;
                        previous_connack = (connection > 0).then_some(connected_at);
                        connected_at = Instant::now();
                        connection += 1;
                        session_present = ack.session_present;
                        let restarted = std::mem::take(&mut refused) && connection > 1;
                        let attempts = backoff.attempts();
                        self.set_link(true);
                        tracing::info!(broker = %self.broker.url, client_id = %self.broker.client_id,
                            filters = subscribed.len(), attempts, session_present = ack.session_present, what = "broker_connected", "connected to broker");
                        let lost = self.broker.persistent_session && !ack.session_present && connection > 1;
                        self.link.send_modify(|link| {
                            link.session_present = ack.session_present;
                            link.sessions_lost += u64::from(lost);
                        });
                        if lost {
                            self.metrics.sessions_lost.inc();
                            tracing::warn!(broker = %self.broker.url, client_id = %self.broker.client_id,
                                "the broker did not keep our session: what it would have queued for us while we were away is lost; every device is read again and confirmed");
                        }
                        // Before subscribing: the settle window must cover the replay.
                        let stall = *last_stall.lock().unwrap_or_else(PoisonError::into_inner);
                        let went = went.take();
                        let unanswered = went.is_some_and(|(_, unanswered)| unanswered);
                        // What ended the last connection: then the probes
                        // lost with it say nothing of the broker.
                        let behind = unanswered
                            || went.zip(stall).is_some_and(|((at, _), s)| killed_by_stall(s, at, self.broker.keep_alive));
                        // Since the last CONNACK: then what the session
                        // queued for us may be as old.
                        let stalled = unanswered || stall.is_some_and(|s| previous_connack.is_none_or(|p| s > p));
                        self.tell(Inbound::Connected { session_present: ack.session_present, restarted, behind }).await;
                        self.announce(&client, true, stamp);
                        subscriptions.reset();
                        // The probe's subscription in the first batch, then
                        // probe 0: it comes back behind whatever the broker
                        // queued for us.
                        let mut filters = vec![probe_topic.clone()];
                        if uptime.on_connack(stalled) {
                            // Known to answer: read before the replay, so a
                            // restart is known before the first retained state.
                            filters.push(UPTIME_TOPIC.to_string());
                        }
                        filters.extend(subscribed.iter().cloned());
                        subscriptions.subscribe(filters);
                        subscriptions.step(&client);
                        probe(&client, &probe_topic, &run, connection, 0);
                        settling = !self.report_subscribed(&subscriptions, subscribed.len()).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.payload.len() > MAX_PAYLOAD => {
                        acks.kept(&p);
                        self.acknowledge(&client, &mut acks);
                        self.metrics.oversized.inc();
                        if let Some(suppressed) = oversized.allow(Instant::now()) {
                            tracing::warn!(topic = %p.topic, bytes = p.payload.len(), limit = MAX_PAYLOAD, suppressed,
                                what = "message_oversized", "dropped a message over the payload limit");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if self.presence.sparkplug_host && p.topic == self.presence.topic => {
                        acks.kept(&p);
                        self.acknowledge(&client, &mut acks);
                        // Sparkplug 3.0: a host that sees its STATE say offline
                        // while it is up publishes its birth again.
                        if crate::sparkplug::says_offline(&p.payload) {
                            tracing::info!(topic = %p.topic, what = "sparkplug_state_offline", "our Sparkplug STATE was set offline while we are up; publishing it again");
                            self.announce(&client, true, stamp);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == probe_topic => {
                        acks.kept(&p);
                        self.acknowledge(&client, &mut acks);
                        if let Some(n) = probe_number(&p.payload, &run, connection) {
                            nudges.probe_back(n);
                            if n > 0 {
                                answer_probe(&client, &probe_topic);
                            } else {
                                uptime.queue_drained();
                            }
                            self.tell(Inbound::Probed(n)).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == UPTIME_TOPIC => {
                        acks.kept(&p);
                        self.acknowledge(&client, &mut acks);
                        if uptime.restarted(&p.payload, p.retain, previous_connack) {
                            tracing::info!(broker = %self.broker.url, uptime = %String::from_utf8_lossy(&p.payload),
                                "the broker started after our last connection");
                            self.tell(Inbound::Restarted { session_present }).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mark = acks.passed(&p);
                        // Held past the limit: the oldest goes now.
                        self.acknowledge(&client, &mut acks);
                        self.tell(Inbound::Message { topic: p.topic, payload: p.payload, retained: p.retain, redelivered: p.dup, mark }).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        for topic in subscriptions.acknowledged(ack.pkid, &ack.return_codes, Instant::now()) {
                            if topic == UPTIME_TOPIC {
                                // Its ACL: restarts are known by other signs.
                                tracing::debug!(topic = %topic, "the broker does not let us read its uptime");
                                continue;
                            }
                            tracing::error!(topic = %topic, "the broker refused the subscription; this topic is not watched (check the broker's ACL)");
                        }
                        if settling {
                            settling = !self.report_subscribed(&subscriptions, subscribed.len()).await;
                            if !settling {
                                uptime.ask(&mut subscriptions);
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => subscriptions.sent(pkid),
                    Ok(_) => {}
                    Err(e) => {
                        nudges.reset();
                        if connected {
                            // Unanswered: the broker's answers fell behind
                            // (a flood we could not read fast enough, a
                            // broker frozen).
                            let unanswered = matches!(e, ConnectionError::MqttState(StateError::AwaitPingResp));
                            went = Some((Instant::now(), unanswered));
                            connected = false;
                            self.set_link(false);
                            let lasted = connected_at.elapsed();
                            tracing::warn!(broker = %self.broker.url, error = %e, lasted_ms = lasted.as_millis() as u64,
                                what = "broker_lost", "lost the broker connection");
                            if lasted >= YOUNG {
                                backoff.reset();
                                stable_until = Instant::now();
                            }
                            died_young = if lasted < CLASH { died_young + 1 } else { 0 };
                            if died_young >= 2 {
                                tracing::error!(broker = %self.broker.url, client_id = %self.broker.client_id, times = died_young,
                                    what = "broker_closes_young", "the broker keeps closing the connection right after accepting it: another client may be using our client id, or the broker refuses a packet of ours; backing off");
                            }
                            uptime.lost();
                            acks.lost();
                            self.tell(Inbound::Disconnected).await;
                        }
                        refused |= matches!(&e, ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
                        subscriptions.reset();
                        stamp = crate::sparkplug::timestamp_ms(SystemTime::now());
                        eventloop.mqtt_options.set_last_will(will(&self.presence, stamp));
                        let delay = backoff.next_delay().min((stable_until.elapsed() / 4).max(RECONNECT_FIRST));
                        log_connect_error(&self.broker.url, &e, backoff.attempts(), delay);
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    }
                }
            }
        }
        if connected {
            // What the writer committed last, acknowledged before we go.
            acks.release(*self.committed.borrow());
            self.acknowledge(&client, &mut acks);
            self.goodbye(&client, &mut eventloop, stamp).await;
        }
        self.set_link(false);
        (self.asks, acks.last_mark())
    }

    /// Passes `inbound` on. Once the monitor has stopped (shutdown stops
    /// the intake first) the session goes on, for the actions that publish
    /// through it, and what arrives is dropped.
    async fn tell(&self, inbound: Inbound) {
        let _ = self.inbound.send(inbound).await;
    }

    /// Acknowledges what may be now (`acks.rs`), as far as rumqttc's
    /// queue takes them; the rest goes at the next turn. One sent before
    /// its commit is counted.
    fn acknowledge(&self, client: &AsyncClient, acks: &mut Acks) {
        while let Some(due) = acks.next() {
            if client.try_ack(&due.packet()).is_err() {
                return;
            }
            acks.sent();
            if due.early {
                self.metrics.acks_early.inc();
            }
        }
    }

    /// Says so when the subscriptions of a connect are all acknowledged, and
    /// returns whether they are.
    async fn report_subscribed(&self, subscriptions: &Subscriptions, filters: usize) -> bool {
        let done = subscriptions.idle();
        if done {
            tracing::info!(filters, what = "subscribed", "subscribed to every watched topic");
            self.tell(Inbound::Subscribed).await;
        }
        done
    }

    /// Publishes the daemon's own retained presence payload.
    fn announce(&self, client: &AsyncClient, online: bool, stamp: u64) {
        let payload = self.presence.payload(online, stamp);
        if let Err(e) = client.try_publish(&self.presence.topic, QoS::AtLeastOnce, true, payload) {
            tracing::error!(topic = %self.presence.topic, error = %e, "could not queue the presence message");
        }
    }

    /// Publishes our offline and disconnects. Both requests queue behind
    /// whatever the actions still asked to publish, so this waits until the
    /// DISCONNECT itself goes out: everything before it has been written,
    /// in order, and the broker stores our offline before it sees the
    /// DISCONNECT. (Waiting for the offline's PUBACK alone was not enough:
    /// an acknowledgement with nothing in flight can come while requests
    /// still wait in the queue, and the disconnect then cut them off.)
    /// Then it reads until the broker closes the connection: a socket
    /// closed with acknowledgements still unread is reset, and a reset can
    /// make the broker drop what it had received but not yet read.
    async fn goodbye(&self, client: &AsyncClient, eventloop: &mut EventLoop, stamp: u64) {
        self.announce(client, false, stamp);
        let queued = client.try_disconnect().is_ok();
        let sent = queued
            && tokio::time::timeout(GOODBYE_TIMEOUT, async {
                let mut disconnected = false;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnected = true,
                        Ok(_) => {}
                        // The broker closed the connection: after our
                        // DISCONNECT, that is the goodbye done.
                        Err(_) => return disconnected,
                    }
                }
            })
            .await
            .unwrap_or(false);
        if sent {
            tracing::info!(topic = %self.presence.topic, what = "presence_offline_published", "published our offline and disconnected");
        } else {
            tracing::warn!(topic = %self.presence.topic, "could not send our offline and disconnect in time; the broker's copy of our will covers us");
        }
    }

    fn set_link(&self, connected: bool) {
        self.link.send_modify(|link| {
            if link.connected != connected {
                link.connected = connected;
                link.since = SystemTime::now();
                if connected {
                    link.connects += 1;
                }
            }
        });
    }
}

/// rumqttc options from the config: client id, keep-alive, credentials, TLS
/// and the daemon's retained will (for a connection made at `stamp`).
pub fn options(broker: &Broker, presence: &Presence, stamp: u64) -> MqttOptions {
    let mut options = connection(broker, &broker.client_id);
    options.set_clean_session(!broker.persistent_session).set_last_will(will(presence, stamp));
    options
}

/// rumqttc options for a clean session of `client_id` to `broker`, without
/// a will: keep-alive, credentials and TLS from the config.
fn connection(broker: &Broker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
    options.set_keep_alive(broker.keep_alive).set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if let Some(user) = &broker.username {
        let password = broker.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        options.set_credentials(user, password);
    }
    if let Some(tls) = &broker.tls {
        options.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.client_config.clone())));
    }
    options
}

/// The daemon's retained will, for a connection made at `stamp`.
fn will(presence: &Presence, stamp: u64) -> LastWill {
    LastWill::new(&presence.topic, presence.payload(false, stamp), QoS::AtLeastOnce, true)
}

/// One line per failed attempt, saying what is wrong in words a person can
/// act on: credentials and TLS problems are errors, network ones warnings.
fn log_connect_error(url: &str, error: &ConnectionError, attempt: u32, retry_in: Duration) {
    let retry_in = humantime::format_duration(Duration::from_millis(retry_in.as_millis() as u64)).to_string();
    match error {
        ConnectionError::ConnectionRefused(code) => {
            let reason = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorized",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
                ConnectReturnCode::Success => "success",
            };
            tracing::error!(broker = %url, reason, attempt, retry_in = %retry_in, what = "broker_refused", "the broker refused the connection: {reason}");
        }
        ConnectionError::Tls(e) => {
            tracing::error!(broker = %url, error = %e, attempt, retry_in = %retry_in, what = "broker_tls_failed", "TLS connection to the broker failed: {e}");
        }
        e => {
            tracing::warn!(broker = %url, error = %e, attempt, retry_in = %retry_in, what = "broker_unreachable_attempt", "cannot reach the broker: {e}")
        }
    }
}

/// Publishes probe `n` of `connection`. The connect's (0) at QoS 1: a
/// broker delivers it in order behind the QoS 1 messages it queued for us,
/// which QoS 0 may pass. The others at QoS 0: the will they confirm is
/// already here, and a QoS 1 probe comes back behind the broker's PUBACK
/// for it, which its Nagle holds until our delayed ACK (40 ms).
fn probe(client: &AsyncClient, topic: &str, run: &str, connection: u64, n: u64) {
    let qos = if n == 0 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
    if let Err(e) = client.try_publish(topic, qos, false, format!("{run}:{connection}:{n}")) {
        tracing::error!(topic = %topic, error = %e, "could not queue a probe");
    }
}

/// Sends the broker a packet (an empty QoS 0 message that reaches nobody)
/// right after a probe came back, and while one is out (`nudges.rs`). Its
/// echo is the broker's last word to us, and with nothing to answer our
/// TCP stack delays its ACK (40 ms): the broker's Nagle would hold the
/// next will (or the probe's echo) for that long. This packet carries the
/// ACK at once.
fn answer_probe(client: &AsyncClient, probe_topic: &str) {
    if let Err(e) = client.try_publish(format!("{probe_topic}/back"), QoS::AtMostOnce, false, Vec::new()) {
        tracing::debug!(error = %e, "could not queue a probe's answer");
    }
}

/// The number of a probe of this run's `connection`, if `payload` is one.
fn probe_number(payload: &[u8], run: &str, connection: u64) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let (rest, n) = text.rsplit_once(':')?;
    let (from, on) = rest.rsplit_once(':')?;
    (from == run && on.parse::<u64>().ok()? == connection).then(|| n.parse().ok()).flatten()
}

/// Asking the broker for its uptime (`$SYS/broker/uptime`, mosquitto's).
#[derive(Default)]
struct Uptime {
    /// When it was asked for on this connection.
    asked: Option<Instant>,
    /// The broker closed the connection right after we asked: never again.
    refused: bool,
    /// The broker has answered (in this run): it is asked for in the
    /// first batch of later connections.
    answered: bool,
    /// Read on this connection.
    read: bool,
    /// The connect's probe is back: what the session queued for us while
    /// we were away is in.
    drained: bool,
    /// Since the last connection began, this process stalled (frozen,
    /// starved) or the connection ended with the broker's answers behind
    /// (a keep-alive unanswered): what the session queued for us meanwhile
    /// may be as old.
    stalled_before: bool,
}

impl Uptime {
    /// A new connection; whether to ask for it with the first batch.
    fn on_connack(&mut self, stalled: bool) -> bool {
        self.stalled_before = stalled;
        self.read = false;
        self.drained = false;
        self.asked = None;
        let now = self.answered && !self.refused;
        if now {
            self.asked = Some(Instant::now());
        }
        now
    }

    /// The connect's probe came back.
    fn queue_drained(&mut self) {
        self.drained = true;
    }

    /// Whether the reading `payload` says the broker started after our
    /// last connection (its CONNACK at `previous`), with a second of slack
    /// for its whole seconds: its first reading on this connection that is
    /// not the retained copy (as old as the broker's `sys_interval`, 10 s
    /// by default), taken as published now. After this process stalled,
    /// what the session queued for us while it did (mosquitto queues its
    /// `$SYS` publishes at QoS 1 and sends them unretained) may be as old
    /// as the stall, or as the backlog that kept the broker's answer to our
    /// keep-alive from us: only a reading after the connect's probe counts
    /// then.
    fn restarted(&mut self, payload: &[u8], retained: bool, previous: Option<Instant>) -> bool {
        self.answered = true;
        if retained || (self.stalled_before && !self.drained) || std::mem::replace(&mut self.read, true) {
            return false;
        }
        let seconds = uptime_seconds(payload);
        previous.zip(seconds).is_some_and(|(p, s)| Duration::from_secs(s + 1) < p.elapsed())
    }

    fn ask(&mut self, subscriptions: &mut Subscriptions) {
        if self.refused || self.asked.is_some() {
            return;
        }
        subscriptions.subscribe(vec![UPTIME_TOPIC.to_string()]);
        self.asked = Some(Instant::now());
    }

    /// The connection went: if right after we asked, the broker refuses
    /// `$SYS` filters that way.
    fn lost(&mut self) {
        if self.asked.take().is_some_and(|at| at.elapsed() < CLASH) {
            self.refused = true;
            tracing::info!(
                topic = UPTIME_TOPIC,
                "the broker closed the connection when asked for its uptime; it is not asked again (its restarts are known by other signs)"
            );
        }
    }
}

/// How often `watch_stalls` notes that the process runs, and the gap that
/// says it stalled.
const STALL_TICK: Duration = Duration::from_millis(250);
const STALL: Duration = Duration::from_secs(1);

/// Whether a stall noticed at `stall` is what ended a connection lost at
/// `lost`: one noticed in the keep-alives before (twice `keep_alive`: the
/// connection did not survive it), or just after (noticed at the first
/// tick after the thaw, which the dead connection may beat). One noticed
/// later fell in the reconnect's wait; one further back was survived.
fn killed_by_stall(stall: Instant, lost: Instant, keep_alive: Duration) -> bool {
    stall + keep_alive * 2 > lost && stall < lost + STALL
}

/// Notes in `last` when this process is seen not to have run for over
/// `STALL` (frozen by SIGSTOP, starved), until `cancel`.
async fn watch_stalls(last: Arc<Mutex<Option<Instant>>>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(STALL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ran = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if now.duration_since(ran) > STALL {
            *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        }
        ran = now;
    }
}

/// The seconds of an uptime payload (mosquitto's `123 seconds`).
fn uptime_seconds(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.split_whitespace().next()?.parse().ok()
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the broker-restart signs against a stall the connection
    /// survived, or one in the reconnect's wait: either made a later loss
    /// look like falling behind, and a real restart's wills were ignored.
    #[test]
    fn a_stall_ends_a_connection_only_near_its_loss() {
        let lost = Instant::now() + Duration::from_secs(100);
        let keep_alive = Duration::from_secs(5);
        assert!(killed_by_stall(lost - Duration::from_secs(3), lost, keep_alive), "in the keep-alives before");
        assert!(killed_by_stall(lost + Duration::from_millis(300), lost, keep_alive), "noticed just after");
        assert!(!killed_by_stall(lost - Duration::from_secs(60), lost, keep_alive), "survived long ago");
        assert!(!killed_by_stall(lost + Duration::from_secs(3), lost, keep_alive), "in the reconnect's wait");
    }
}
