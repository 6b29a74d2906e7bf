//! Outgoing datagrams of one worker, batched per destination.
//!
//! Forwarding one video frame to a subscriber produces a run of equal-sized
//! packets to the same address. On Linux such a run leaves in one `sendmsg`
//! with UDP generic segmentation offload (`UDP_SEGMENT`): one system call and
//! one trip through the socket layer instead of one per packet, which is most
//! of what a down track costs once str0m has encrypted the packets. Anything
//! the kernel refuses falls back to one `send_to` per packet, for good.
//!
//! What is left are lone datagrams: an audio frame is one packet per
//! subscriber, so forwarding it is a datagram to each of N addresses. Those
//! are collected and leave together with `sendmmsg`, up to 32 per system
//! call. A GSO run or the end of the worker's turn sends the collected ones
//! first, so datagrams to one address never overtake each other.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

/// Linux caps a GSO send at 64 segments and one IP datagram's worth of bytes.
const MAX_SEGMENTS: usize = 64;
const MAX_BYTES: usize = 60_000;
/// Lone datagrams per `sendmmsg`.
const MAX_SINGLES: usize = 32;

pub(crate) struct Egress {
    sockets: Vec<Arc<UdpSocket>>,
    local: Vec<SocketAddr>,
    /// The run being collected: socket index, destination, segment size.
    run: Option<(usize, SocketAddr, usize)>,
    /// Packets of the run, back to back.
    buf: Vec<u8>,
    count: usize,
    /// A shorter packet ended the run (only the last segment may be short).
    closed: bool,
    gso: bool,
    /// Lone datagrams waiting for one `sendmmsg`: socket index, then
    /// destination and end offset in `singles_buf` of each.
    singles_socket: usize,
    singles: Vec<(SocketAddr, usize)>,
    singles_buf: Vec<u8>,
    mmsg: bool,
}

impl Egress {
    pub(crate) fn new(sockets: Vec<Arc<UdpSocket>>, local: Vec<SocketAddr>) -> Self {
        Egress {
            sockets,
            local,
            run: None,
            buf: Vec::with_capacity(MAX_BYTES + 2048),
            count: 0,
            closed: false,
            gso: cfg!(all(target_os = "linux", target_pointer_width = "64")),
            singles_socket: 0,
            singles: Vec::with_capacity(MAX_SINGLES),
            singles_buf: Vec::with_capacity(MAX_SINGLES * 1500),
            mmsg: cfg!(target_os = "linux"),
        }
    }

    pub(crate) fn sockets(&self) -> &[Arc<UdpSocket>] {
        &self.sockets
    }

    /// Queues one datagram; it leaves at the latest on [`Egress::flush`].
    pub(crate) fn send(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        let Some(sock) = self.socket_for(source, destination) else {
            return;
        };
        if !self.gso {
            self.send_one(sock, destination, contents);
            return;
        }
        let len = contents.len();
        let joins = match self.run {
            Some((s, d, seg)) => {
                s == sock
                    && d == destination
                    && !self.closed
                    && len <= seg
                    && self.count < MAX_SEGMENTS
                    && self.buf.len() + len <= MAX_BYTES
            }
            None => false,
        };
        if !joins {
            self.end_run();
            self.run = Some((sock, destination, len));
        }
        if let Some((_, _, seg)) = self.run
            && len < seg
        {
            self.closed = true;
        }
        self.buf.extend_from_slice(contents);
        self.count += 1;
    }

    /// Sends what is queued.
    pub(crate) fn flush(&mut self) {
        self.end_run();
        self.send_singles();
    }

    /// Sends the run being collected (a lone datagram joins the `sendmmsg`
    /// batch instead).
    fn end_run(&mut self) {
        let Some((sock, destination, seg)) = self.run.take() else {
            return;
        };
        let count = std::mem::take(&mut self.count);
        self.closed = false;
        let buf = std::mem::take(&mut self.buf);
        if count > 1 && self.gso {
            // Whatever was queued before this run leaves before it.
            self.send_singles();
            match self.send_gso(sock, destination, seg, &buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    metrics::counter!("switchyard_rtc_send_errors_total").increment(1);
                }
                Err(e) => {
                    tracing::info!("UDP segmentation offload unusable ({e}); sending one by one");
                    self.gso = false;
                    for chunk in buf.chunks(seg.max(1)) {
                        self.send_one(sock, destination, chunk);
                    }
                }
            }
        } else if self.mmsg {
            if !self.singles.is_empty()
                && (self.singles_socket != sock || self.singles.len() >= MAX_SINGLES)
            {
                self.send_singles();
            }
            self.singles_socket = sock;
            self.singles_buf.extend_from_slice(&buf);
            self.singles.push((destination, self.singles_buf.len()));
        } else {
            self.send_one(sock, destination, &buf);
        }
        self.buf = buf;
        self.buf.clear();
    }

    /// Sends the collected lone datagrams, with one `sendmmsg` where it works.
    fn send_singles(&mut self) {
        if self.singles.is_empty() {
            return;
        }
        let singles = std::mem::take(&mut self.singles);
        let buf = std::mem::take(&mut self.singles_buf);
        let sock = self.singles_socket;
        let sent = if singles.len() > 1 {
            match self.send_mmsg(sock, &singles, &buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => {
                    tracing::info!("sendmmsg unusable ({e}); sending one by one");
                    self.mmsg = false;
                    0
                }
            }
        } else {
            0
        };
        // What sendmmsg did not take (none, a full buffer, or a refusal) gets
        // one try each, as lone sends always had.
        let mut start = singles.get(sent.wrapping_sub(1)).map_or(0, |(_, end)| *end);
        for (destination, end) in singles.iter().skip(sent) {
            if let Some(d) = buf.get(start..*end) {
                self.send_one(sock, *destination, d);
            }
            start = *end;
        }
        self.singles = singles;
        self.singles.clear();
        self.singles_buf = buf;
        self.singles_buf.clear();
    }

    #[cfg(target_os = "linux")]
    fn send_mmsg(
        &self,
        sock: usize,
        singles: &[(SocketAddr, usize)],
        buf: &[u8],
    ) -> std::io::Result<usize> {
        use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
        use std::os::fd::AsRawFd;
        let s = self
            .sockets
            .get(sock)
            .ok_or_else(|| std::io::Error::other("no socket"))?;
        let mut slices = Vec::with_capacity(singles.len());
        let mut addrs = Vec::with_capacity(singles.len());
        let mut start = 0;
        for (destination, end) in singles {
            let d = buf.get(start..*end).unwrap_or_default();
            slices.push([std::io::IoSlice::new(d)]);
            addrs.push(Some(SockaddrStorage::from(*destination)));
            start = *end;
        }
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(singles.len(), None);
        s.try_io(tokio::io::Interest::WRITABLE, || {
            sendmmsg(
                s.as_raw_fd(),
                &mut headers,
                &slices,
                &addrs,
                [],
                MsgFlags::empty(),
            )
            .map(|r| r.count())
            .map_err(std::io::Error::from)
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn send_mmsg(&self, _: usize, _: &[(SocketAddr, usize)], _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("not supported here"))
    }

    fn socket_for(&self, source: SocketAddr, destination: SocketAddr) -> Option<usize> {
        self.local.iter().position(|a| *a == source).or_else(|| {
            self.local
                .iter()
                .position(|a| a.is_ipv4() == destination.is_ipv4())
        })
    }

    fn send_one(&self, sock: usize, destination: SocketAddr, contents: &[u8]) {
        let Some(s) = self.sockets.get(sock) else {
            return;
        };
        if let Err(e) = s.try_send_to(contents, destination) {
            metrics::counter!("switchyard_rtc_send_errors_total").increment(1);
            tracing::trace!("udp send to {destination}: {e}");
        }
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn send_gso(
        &self,
        sock: usize,
        destination: SocketAddr,
        seg: usize,
        buf: &[u8],
    ) -> std::io::Result<()> {
        let s = self
            .sockets
            .get(sock)
            .ok_or_else(|| std::io::Error::other("no socket"))?;
        let seg = u16::try_from(seg).map_err(std::io::Error::other)?;
        let control = Cmsg::udp_segment(seg);
        let addr = socket2::SockAddr::from(destination);
        let iov = [std::io::IoSlice::new(buf)];
        let msg = socket2::MsgHdr::new()
            .with_addr(&addr)
            .with_buffers(&iov)
            .with_control(&control.0);
        let sent = s.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(&**s).sendmsg(&msg, 0)
        })?;
        if sent != buf.len() {
            return Err(std::io::Error::other("short GSO send"));
        }
        Ok(())
    }

    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    fn send_gso(&self, _: usize, _: SocketAddr, _: usize, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("not supported here"))
    }
}

/// One `cmsghdr` carrying `UDP_SEGMENT` on 64-bit Linux: length (8 bytes),
/// level `SOL_UDP` (4), type `UDP_SEGMENT` (4), the u16 segment size, padding
/// to `CMSG_SPACE(2)` = 24 bytes.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[repr(C, align(8))]
struct Cmsg([u8; 24]);

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
impl Cmsg {
    fn udp_segment(size: u16) -> Cmsg {
        const SOL_UDP: i32 = 17;
        const UDP_SEGMENT: i32 = 103;
        let mut b = [0u8; 24];
        let header = [
            (18u64).to_ne_bytes().as_slice(),
            SOL_UDP.to_ne_bytes().as_slice(),
            UDP_SEGMENT.to_ne_bytes().as_slice(),
            size.to_ne_bytes().as_slice(),
        ]
        .concat();
        for (d, s) in b.iter_mut().zip(header) {
            *d = s;
        }
        Cmsg(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver() -> (std::net::UdpSocket, SocketAddr) {
        let r = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let a = r.local_addr().unwrap();
        (r, a)
    }

    /// An egress over one socket on 127.0.0.1, and that socket's address.
    async fn egress() -> (Egress, SocketAddr) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // As in a running worker, the reactor has seen the socket writable.
        sock.writable().await.unwrap();
        let local = sock.local_addr().unwrap();
        (Egress::new(vec![Arc::new(sock)], vec![local]), local)
    }

    fn datagrams(r: &std::net::UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let len = r.recv(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    /// A frame's packets (equal sizes, a shorter last one) leave batched but
    /// arrive as the same separate datagrams, in order; a packet to another
    /// address, or a longer one after a short one, starts a new batch.
    #[tokio::test]
    async fn batched_datagrams_arrive_separately_and_in_order() {
        let (mut out, local) = egress().await;
        let (ra, a) = receiver();
        let (rb, b) = receiver();
        let sent_a: Vec<Vec<u8>> = vec![
            vec![1; 1200],
            vec![2; 1200],
            vec![3; 1200],
            vec![4; 700],
            vec![5; 1200],
            vec![6; 90],
        ];
        let sent_b: Vec<Vec<u8>> = vec![vec![7; 1200], vec![8; 1200]];
        out.send(local, a, &sent_a[0]);
        out.send(local, a, &sent_a[1]);
        out.send(local, b, &sent_b[0]);
        out.send(local, a, &sent_a[2]);
        out.send(local, a, &sent_a[3]);
        out.send(local, a, &sent_a[4]);
        out.send(local, a, &sent_a[5]);
        out.send(local, b, &sent_b[1]);
        out.flush();
        assert_eq!(datagrams(&ra, sent_a.len()), sent_a);
        assert_eq!(datagrams(&rb, sent_b.len()), sent_b);
    }

    /// A run longer than one GSO send may carry (segments and bytes) is split
    /// over several sends, nothing lost or reordered.
    #[tokio::test]
    async fn a_long_run_is_split_without_loss() {
        let (mut out, local) = egress().await;
        let (r, a) = receiver();
        let sent: Vec<Vec<u8>> = (0..80u8).map(|i| vec![i; 1000]).collect();
        for d in &sent {
            out.send(local, a, d);
        }
        out.flush();
        assert_eq!(datagrams(&r, sent.len()), sent);
    }

    /// Lone datagrams to many addresses (an audio frame to every subscriber)
    /// leave batched, more than one `sendmmsg` holds; a frame's run to one of
    /// them in between does not overtake that address's earlier datagram.
    #[tokio::test]
    async fn lone_datagrams_to_many_addresses_all_arrive_in_order() {
        let (mut out, local) = egress().await;
        let receivers: Vec<_> = (0..40).map(|_| receiver()).collect();
        for round in 0..2u8 {
            for (i, (_, a)) in receivers.iter().enumerate() {
                out.send(local, *a, &[round, i as u8, 0xaa]);
                if i == 7 && round == 0 {
                    out.send(local, *a, &[9; 1100]);
                    out.send(local, *a, &[9; 1100]);
                }
            }
        }
        out.flush();
        for (i, (r, _)) in receivers.iter().enumerate() {
            let mut want = vec![vec![0, i as u8, 0xaa]];
            if i == 7 {
                want.push(vec![9; 1100]);
                want.push(vec![9; 1100]);
            }
            want.push(vec![1, i as u8, 0xaa]);
            assert_eq!(datagrams(r, want.len()), want, "receiver {i}");
        }
    }
}
