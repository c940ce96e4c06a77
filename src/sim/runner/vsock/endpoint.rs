//! The host's end of the guest's vsock connections: a listener in the abstract namespace,
//! an accepting thread and a thread per connection, each reading DataMap request packets
//! and writing what the host model answers ([`Host::vsock_request`]).
//!
//! A connection ends when the guest closes it, when the host closes it (FAST_CLOSE, a
//! fault, a request it cannot read) or when the run ends: [`Endpoint::stop`] shuts every
//! connection down, so no thread outlives the run even if a guest process that was let
//! go still holds its socket.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Scope;

use super::{lock, Names, LAST_RESERVED_PORT};
use crate::erpc::datamap;
use crate::sim::host::MAX_REQUEST_BODY;
use crate::sim::Host;

/// Connections served at once; a guest that opens more has the newest closed at once
/// (it reads the end of the stream), so the accepting thread never stalls.
const MAX_LIVE: usize = 256;

/// The host's end, for one run.
pub(crate) struct Endpoint {
    listener: UnixListener,
    names: Names,
    stop: AtomicBool,
    /// A handle on every connection being served, to shut it down at the end.
    live: Mutex<Vec<(u64, UnixStream)>>,
    next_id: AtomicU64,
}

impl Endpoint {
    /// Listens on the run's host name.
    pub(crate) fn bind(names: Names) -> std::io::Result<Endpoint> {
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(names.host())?)?;
        Ok(Endpoint {
            listener,
            names,
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        })
    }

    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// Accepts connections until [`Endpoint::stop`], serving each in a thread of `scope`.
    pub(crate) fn accept_loop<'s, 'e: 's>(
        &'e self,
        scope: &'s Scope<'s, 'e>,
        host: &'e Mutex<Host>,
    ) {
        let mut failures = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            let (stream, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and keep going.
                    failures = failures.saturating_add(1);
                    if failures % 100 == 1 {
                        log::warn!("vsock endpoint: accept: {e}");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            // The runner bound every guest socket before connecting it.
            let port = peer.as_abstract_name().and_then(|n| self.names.port_of(n));
            let Some(port) = port else {
                continue; // not a guest socket of this run: dropped
            };
            let Some(id) = self.register(&stream) else {
                continue;
            };
            let privileged = port <= LAST_RESERVED_PORT;
            let spawned = std::thread::Builder::new()
                .name("vmw-sim-vsock".into())
                .spawn_scoped(scope, move || {
                    serve(stream, privileged, host);
                    self.unregister(id);
                });
            if let Err(e) = spawned {
                log::warn!("vsock endpoint: no thread for a connection: {e}");
                self.unregister(id);
            }
        }
    }

    /// Notes a connection for [`Endpoint::stop`]; `None` when it is not to be served.
    fn register(&self, stream: &UnixStream) -> Option<u64> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.stop.load(Ordering::SeqCst) || live.len() >= MAX_LIVE {
            return None;
        }
        let handle = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        live.push((id, handle));
        Some(id)
    }

    fn unregister(&self, id: u64) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.retain(|(i, _)| *i != id);
    }

    /// Ends the accepting thread and every connection's.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees the flag.
        if let Ok(addr) = SocketAddr::from_abstract_name(self.names.host()) {
            let _ = UnixStream::connect_addr(&addr);
        }
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, s) in live.iter() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Serves one connection: request packets in, replies out, until either side closes.
fn serve(mut stream: UnixStream, privileged: bool, host: &Mutex<Host>) {
    let mut header = [0u8; datamap::HEADER_LEN];
    loop {
        if stream.read_exact(&mut header).is_err() {
            return; // closed (or shut down), between packets or inside one
        }
        let Ok(len) = datamap::body_len(header, MAX_REQUEST_BODY) else {
            return; // over the cap: nothing sensible to answer
        };
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let served = lock(host).vsock_request(&body, privileged);
        if !served.reply.is_empty() && stream.write_all(&served.reply).is_err() {
            return;
        }
        if served.close {
            return;
        }
    }
}
