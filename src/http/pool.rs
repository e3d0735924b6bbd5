//! The endpoint's connections and live streams, so no client can shut out
//! a probe.
//!
//! - At most `MAX_CONNECTIONS` connections are open. When that many are
//!   and another comes, one serving nothing (idle between requests, still
//!   sending its headers, or reading a finished answer slowly) is closed
//!   for it: one of the client holding the most connections, the oldest of
//!   its. Only when every open connection is serving a request is the new
//!   one refused. Clients that hold connections without using them (slow
//!   headers, never reading) therefore cannot keep a health probe out.
//! - Live streams (`/api/events`) have a budget of their own
//!   (`MAX_STREAMS`, `MAX_STREAMS_PER_CLIENT`) and count as serving while
//!   they last: they can never take the last connection.
//!
//! A client is its IP address. The bookkeeping is a short lock per
//! connection and per stream; the connections themselves run on tasks of
//! their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// Connections open at once (each costs a file descriptor and a task).
pub const MAX_CONNECTIONS: usize = 256;
/// Live streams open at once, and from one client.
pub const MAX_STREAMS: usize = 32;
pub const MAX_STREAMS_PER_CLIENT: usize = 8;

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    n: u64,
    pub peer: IpAddr,
    opened: Instant,
    /// Requests (and streams) it is serving.
    busy: AtomicUsize,
    /// Fired to close it for a newer one.
    pub close: CancellationToken,
}

/// While it lives, its connection is serving something.
#[derive(Debug)]
pub struct Busy(Arc<Conn>);

impl Busy {
    pub fn new(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of a new connection.
#[derive(Debug)]
pub enum Admitted {
    /// Served; `closed` was closed to make room for it.
    Open { conn: Arc<Conn>, closed: Option<IpAddr> },
    /// Every open connection is serving a request.
    Refused,
}

#[derive(Debug, Default)]
pub struct Pool {
    open: Mutex<(u64, HashMap<u64, Arc<Conn>>)>,
}

impl Pool {
    /// Takes in a connection from `peer`, closing an unused one if the
    /// pool is full.
    pub fn admit(&self, peer: IpAddr) -> Admitted {
        let mut guard = self.open.lock().expect("not poisoned");
        let (next, open) = &mut *guard;
        let mut closed = None;
        if open.len() >= MAX_CONNECTIONS {
            let Some(victim) =
                choose_victim(open.values().map(|c| (c.n, c.peer, c.opened, c.busy.load(Ordering::Relaxed))))
            else {
                return Admitted::Refused;
            };
            if let Some(conn) = open.remove(&victim) {
                conn.close.cancel();
                closed = Some(conn.peer);
            }
        }
        *next += 1;
        let conn = Arc::new(Conn {
            n: *next,
            peer,
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        open.insert(conn.n, Arc::clone(&conn));
        Admitted::Open { conn, closed }
    }

    /// The connection ended.
    pub fn release(&self, conn: &Conn) {
        self.open.lock().expect("not poisoned").1.remove(&conn.n);
    }
}

/// The connection to close for a new one, of `(n, peer, opened, busy)`:
/// one serving nothing, of the client with the most connections, the
/// oldest of its; `None` when all are serving.
fn choose_victim(conns: impl Iterator<Item = (u64, IpAddr, Instant, usize)> + Clone) -> Option<u64> {
    let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
    for (_, peer, _, _) in conns.clone() {
        *per_peer.entry(peer).or_default() += 1;
    }
    conns
        .filter(|(_, _, _, busy)| *busy == 0)
        .max_by(|a, b| per_peer[&a.1].cmp(&per_peer[&b.1]).then(b.2.cmp(&a.2)).then(b.0.cmp(&a.0)))
        .map(|(n, ..)| n)
}

/// The live streams open, in all and per client.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A live stream's place; given back when dropped.
#[derive(Debug)]
pub struct Stream {
    streams: Arc<Streams>,
    peer: IpAddr,
}

/// No room for another stream: in all, or for this client.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    All,
    Client,
}

impl Streams {
    /// A place for a stream of `peer`'s, if the budgets allow.
    pub fn open(self: &Arc<Self>, peer: IpAddr) -> Result<Stream, Full> {
        let mut open = self.open.lock().expect("not poisoned");
        if open.values().sum::<usize>() >= MAX_STREAMS {
            return Err(Full::All);
        }
        let mine = open.entry(peer).or_default();
        if *mine >= MAX_STREAMS_PER_CLIENT {
            return Err(Full::Client);
        }
        *mine += 1;
        Ok(Stream { streams: Arc::clone(self), peer })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_victim_is_an_idle_connection_of_the_client_holding_the_most_the_oldest_of_its() {
        let t = Instant::now();
        let later = |s| t + Duration::from_secs(s);
        let conns = vec![
            (1, ip(1), t, 0),        // the oldest, but its client holds one
            (2, ip(2), later(1), 1), // busy
            (3, ip(2), later(2), 0), // the hog's oldest idle one
            (4, ip(2), later(3), 0),
        ];
        assert_eq!(choose_victim(conns.clone().into_iter()), Some(3));
        let all_busy: Vec<_> = conns.into_iter().map(|(n, p, o, _)| (n, p, o, 1)).collect();
        assert_eq!(choose_victim(all_busy.into_iter()), None);
    }

    #[test]
    fn a_full_pool_closes_an_idle_connection_and_refuses_only_when_all_serve() {
        let pool = Pool::default();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let Admitted::Open { conn, closed: None } = pool.admit(ip(1)) else { panic!("room left") };
            held.push((Busy::new(&conn), conn));
        }
        assert!(matches!(pool.admit(ip(2)), Admitted::Refused), "all serving");
        let (busy, first) = held.remove(0);
        drop(busy);
        let Admitted::Open { closed: Some(peer), .. } = pool.admit(ip(2)) else { panic!("an idle one to close") };
        assert_eq!(peer, ip(1));
        assert!(first.close.is_cancelled(), "the idle one was told to close");
        pool.release(&first);
    }

    #[test]
    fn streams_have_a_budget_in_all_and_per_client() {
        let streams = Arc::new(Streams::default());
        let mine: Vec<Stream> = (0..MAX_STREAMS_PER_CLIENT).map(|_| streams.open(ip(1)).unwrap()).collect();
        assert_eq!(streams.open(ip(1)).unwrap_err(), Full::Client);
        let others: Vec<Stream> = (0..MAX_STREAMS - MAX_STREAMS_PER_CLIENT)
            .map(|i| streams.open(ip(10 + (i % 200) as u8)).unwrap())
            .collect();
        assert_eq!(streams.open(ip(99)).unwrap_err(), Full::All);
        drop(mine);
        assert!(streams.open(ip(1)).is_ok(), "given back when dropped");
        drop(others);
        assert!(streams.open.lock().unwrap().len() <= 1);
    }
}
