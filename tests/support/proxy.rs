//! A TCP proxy between a client and the broker that can go silent: it then
//! keeps both sockets open but forwards nothing, like a cable cut somewhere
//! along the way (a half-open link). Only a keep-alive timeout notices. It
//! can also cut its connections (a network blip) and go on accepting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    blackhole: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` (returned) to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let (hole, running) = (Arc::clone(&blackhole), Arc::clone(&pipes));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut running = running.lock().unwrap();
                running.push(tokio::spawn(pipe(cr, sw, Arc::clone(&hole))));
                running.push(tokio::spawn(pipe(sr, cw, Arc::clone(&hole))));
            }
        });
        Proxy { port, blackhole, pipes }
    }

    /// Closes every connection through it (both ends see them go); new
    /// ones are accepted.
    pub fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    /// From now on, bytes are swallowed and the sockets stay open.
    pub fn go_silent(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    /// Forwards again, after closing what went silent.
    pub fn speak_again(&self) {
        self.cut();
        self.blackhole.store(false, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hole: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if hole.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Silent links never close: keep the write half alive.
    if hole.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}
