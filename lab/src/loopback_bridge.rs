//! A TCP port of the host's loopback, reachable at the same address from
//! inside a namespace: the daemon under test runs in the edge namespace
//! and talks to the test's API server, which listens on the host's
//! 127.0.0.1. The listening socket is opened inside the namespace; each
//! connection is relayed to the host's loopback by two copying threads.

use std::{
    io,
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::Netns;

/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Relays `127.0.0.1:port` inside a namespace to `127.0.0.1:port` on the
/// host until dropped; dropping closes every relayed connection.
pub struct LoopbackBridge {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl LoopbackBridge {
    /// Starts relaying `port` from inside `ns` to the host.
    pub fn new(ns: &Netns, port: u16) -> Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = ns
            .enter(move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let stop = stop.clone();
            let connections = connections.clone();
            thread::spawn(move || accept_loop(listener, addr, &stop, &connections))
        };
        Ok(Self {
            port,
            stop,
            connections,
            accept: Some(accept),
        })
    }

    /// The relayed port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every relayed connection (the clients see them end, as when
    /// the server goes away); new ones are still accepted.
    pub fn close_connections(&self) {
        for stream in self.connections.lock().expect("bridge lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for LoopbackBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.close_connections();
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    stop: &AtomicBool,
    connections: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            // A refused relay (the server is down: a test's outage) closes
            // the client's connection, which is what the client should see.
            Ok((inside, _)) => {
                let _ = relay(inside, target, connections);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
            }
            Err(error) => {
                eprintln!("loopback bridge accept: {error}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// Connects to the host's `target` and copies both ways on two threads;
/// each direction's end shuts the other side's writing half.
fn relay(
    inside: TcpStream,
    target: SocketAddr,
    connections: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    inside.set_nonblocking(false)?;
    let outside = match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
        Ok(outside) => outside,
        Err(error) => {
            let _ = inside.shutdown(Shutdown::Both);
            return Err(error);
        }
    };
    {
        let mut open = connections.lock().expect("bridge lock");
        open.push(inside.try_clone()?);
        open.push(outside.try_clone()?);
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        })
    };
    pipe(inside.try_clone()?, outside.try_clone()?);
    pipe(outside, inside);
    Ok(())
}
