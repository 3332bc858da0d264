//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP) whose A/AAAA records a test
//! can change: every name resolves to the current record set, with a chosen TTL.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Records {
    ips: Vec<IpAddr>,
    ttl: u32,
}

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    records: Arc<Mutex<Records>>,
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `ips` (A for IPv4, AAAA for IPv6) with `ttl` seconds for every name.
    pub async fn start(ips: impl IntoIterator<Item = IpAddr>, ttl: u32) -> DnsServer {
        // UDP and TCP on one port: the UDP port may be taken for TCP by another test (they run
        // in parallel), so try a few.
        let mut bound = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                bound = Some((udp, addr, tcp));
                break;
            }
        }
        let (udp, addr, tcp) = bound.expect("a loopback port free for both UDP and TCP");
        let records = Arc::new(Mutex::new(Records {
            ips: ips.into_iter().collect(),
            ttl,
        }));
        let queries = Arc::new(AtomicUsize::new(0));
        let udp_task = tokio::spawn({
            let (records, queries) = (records.clone(), queries.clone());
            async move {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    let reply = answer(&buf[..len], &records.lock().unwrap());
                    if let Some(reply) = reply {
                        let _ = udp.send_to(&reply, from).await;
                    }
                }
            }
        });
        let tcp_task = tokio::spawn({
            let (records, queries) = (records.clone(), queries.clone());
            async move {
                while let Ok((mut stream, _)) = tcp.accept().await {
                    let (records, queries) = (records.clone(), queries.clone());
                    tokio::spawn(async move {
                        loop {
                            let Ok(len) = stream.read_u16().await else {
                                return;
                            };
                            let mut query = vec![0; len as usize];
                            if stream.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            queries.fetch_add(1, Ordering::SeqCst);
                            let reply = answer(&query, &records.lock().unwrap());
                            let Some(reply) = reply else {
                                return;
                            };
                            let _ = stream.write_u16(reply.len() as u16).await;
                            let _ = stream.write_all(&reply).await;
                        }
                    });
                }
            }
        });
        DnsServer {
            addr,
            records,
            queries,
            tasks: vec![udp_task, tcp_task],
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the records.
    pub fn set(&self, ips: impl IntoIterator<Item = IpAddr>) {
        self.records.lock().unwrap().ips = ips.into_iter().collect();
    }

    /// Queries received so far (A and AAAA count separately).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Answers one query: the question echoed, then every record of the asked type.
fn answer(query: &[u8], records: &Records) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = &query[12..at + 4];
    let matching: Vec<&IpAddr> = records
        .ips
        .iter()
        .filter(|ip| matches!((qtype, ip), (1, IpAddr::V4(_)) | (28, IpAddr::V6(_))))
        .collect();
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[0..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x84 | rd); // QR, authoritative, RD copied
    reply.push(0x80); // RA, NOERROR
    reply.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    reply.extend_from_slice(&(matching.len() as u16).to_be_bytes()); // ANCOUNT
    reply.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    reply.extend_from_slice(question);
    for ip in matching {
        reply.extend_from_slice(&[0xC0, 0x0C]); // the question's name
        reply.extend_from_slice(&qtype.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes()); // IN
        reply.extend_from_slice(&records.ttl.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => {
                reply.extend_from_slice(&4u16.to_be_bytes());
                reply.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                reply.extend_from_slice(&16u16.to_be_bytes());
                reply.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(reply)
}
