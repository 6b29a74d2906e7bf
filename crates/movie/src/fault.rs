//! A UDP socket that drops, duplicates and reorders datagrams on purpose,
//! for tests and load runs that need a bad network on loopback.
//!
//! It wraps a real socket and decides the fate of every datagram with a
//! rule the test supplies, separately for what it sends and what it
//! receives. Reordering holds a received datagram back until a given
//! number of later ones have been delivered.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::UdpSocket;

use crate::client::DatagramSocket;

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    Duplicate,
    /// Deliver after this many later datagrams (received side only; on the
    /// sending side it is delivered at once).
    HoldFor(u32),
}

/// Which way a datagram goes through the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Sent,
    Received,
}

type Rule = Box<dyn FnMut(Way, SocketAddr, &[u8]) -> Fate + Send>;

struct Inbox {
    ready: VecDeque<(Vec<u8>, SocketAddr)>,
    held: Vec<(u32, Vec<u8>, SocketAddr)>,
}

pub struct FaultySocket {
    inner: UdpSocket,
    rule: Mutex<Rule>,
    inbox: Mutex<Inbox>,
}

impl FaultySocket {
    /// `rule` sees each datagram with its direction and the peer address.
    pub fn new(
        inner: UdpSocket,
        rule: impl FnMut(Way, SocketAddr, &[u8]) -> Fate + Send + 'static,
    ) -> Self {
        FaultySocket {
            inner,
            rule: Mutex::new(Box::new(rule)),
            inbox: Mutex::new(Inbox {
                ready: VecDeque::new(),
                held: Vec::new(),
            }),
        }
    }

    fn fate(&self, way: Way, peer: SocketAddr, data: &[u8]) -> Fate {
        match self.rule.lock() {
            Ok(mut rule) => rule(way, peer, data),
            Err(_) => Fate::Deliver,
        }
    }

    fn pop_ready(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let mut inbox = self.inbox.lock().ok()?;
        let (data, from) = inbox.ready.pop_front()?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Some((n, from))
    }

    /// Files a freshly received datagram according to its fate and
    /// releases held ones whose count ran out.
    fn file(&self, data: &[u8], from: SocketAddr) {
        let fate = self.fate(Way::Received, from, data);
        let Ok(mut inbox) = self.inbox.lock() else {
            return;
        };
        let mut released = Vec::new();
        inbox.held.retain_mut(|(n, d, f)| {
            *n = n.saturating_sub(1);
            if *n == 0 {
                released.push((std::mem::take(d), *f));
                false
            } else {
                true
            }
        });
        match fate {
            Fate::Deliver => inbox.ready.push_back((data.to_vec(), from)),
            Fate::Drop => {}
            Fate::Duplicate => {
                inbox.ready.push_back((data.to_vec(), from));
                inbox.ready.push_back((data.to_vec(), from));
            }
            Fate::HoldFor(0) => inbox.ready.push_back((data.to_vec(), from)),
            Fate::HoldFor(n) => inbox.held.push((n, data.to_vec(), from)),
        }
        inbox.ready.extend(released);
    }
}

impl DatagramSocket for FaultySocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self.fate(Way::Sent, to, buf) {
            Fate::Drop => Ok(buf.len()),
            Fate::Duplicate => {
                self.inner.send_to(buf, to).await?;
                self.inner.send_to(buf, to).await
            }
            Fate::Deliver | Fate::HoldFor(_) => self.inner.send_to(buf, to).await,
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut scratch = vec![0u8; buf.len()];
        loop {
            if let Some(r) = self.pop_ready(buf) {
                return Ok(r);
            }
            let (n, from) = self.inner.recv_from(&mut scratch).await?;
            self.file(scratch.get(..n).unwrap_or_default(), from);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
