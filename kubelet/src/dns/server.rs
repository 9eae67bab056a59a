//! The request handler: cluster names from the zone (`records.rs`), the rest forwarded to
//! the node's upstream resolvers, as CoreDNS's `forward . /etc/resolv.conf` does.
//!
//! hickory-server does the wire protocol (UDP and TCP listeners, parsing, EDNS sizes,
//! truncation); the agent only decides the answers. Forwarding is a plain relay of the
//! question over UDP (TCP when the answer is truncated), hand-written because a full
//! resolver (hickory-resolver) would add caching and retries policy the pods' own resolvers
//! already have, and a dependency tree for ~40 lines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::records::{Outcome, Zone};

/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a fresh snapshot of the zone comes from (the agent's own state; tests give a
/// fixed one).
pub type ZoneSource = Arc<dyn Fn() -> Zone + Send + Sync>;

pub struct Handler {
    pub zone: ZoneSource,
    /// The upstream resolvers (port 53), in resolv.conf order.
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("encoding the question: {0}")]
    Proto(#[from] hickory_server::proto::ProtoError),
    #[error("{0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("{0}: no answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout(SocketAddr),
}

fn failed() -> ResponseInfo {
    let mut h = Header::new();
    h.set_response_code(ResponseCode::ServFail);
    h.into()
}

async fn udp_exchange(up: SocketAddr, question: &[u8], id: u16) -> Result<Vec<u8>, ForwardError> {
    let io = |e| ForwardError::Io(up, e);
    let local: SocketAddr = match up.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
    sock.connect(up).await.map_err(io)?;
    sock.send(question).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        // A stray datagram (an earlier question's late answer) is not ours.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(up: SocketAddr, question: &[u8]) -> Result<Vec<u8>, ForwardError> {
    let io = |e| ForwardError::Io(up, e);
    let mut s = tokio::net::TcpStream::connect(up).await.map_err(io)?;
    let len = u16::try_from(question.len()).unwrap_or(u16::MAX);
    s.write_all(&len.to_be_bytes()).await.map_err(io)?;
    s.write_all(question).await.map_err(io)?;
    let n = s.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.map_err(io)?;
    Ok(buf)
}

impl Handler {
    /// Asks the upstreams in turn; the first answer wins.
    async fn forward(&self, query: Query) -> Result<Message, ForwardError> {
        let mut m = Message::new();
        let id = fastrand::u16(..);
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(query);
        let question = m.to_vec()?;
        let mut last = ForwardError::NoUpstream;
        for up in &self.upstreams {
            let r = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                let bytes = udp_exchange(*up, &question, id).await?;
                let msg = Message::from_vec(&bytes)?;
                if !msg.truncated() {
                    return Ok(msg);
                }
                Ok(Message::from_vec(&tcp_exchange(*up, &question).await?)?)
            })
            .await;
            match r {
                Ok(Ok(msg)) => return Ok(msg),
                Ok(Err(e)) => last = e,
                Err(_) => last = ForwardError::Timeout(*up),
            }
        }
        Err(last)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = request.edns() {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512));
            builder.edns(ours);
        }
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let query = match request.request_info() {
            Ok(info) if request.op_code() == OpCode::Query => info.query.clone(),
            Ok(_) => {
                let m = builder.error_msg(request.header(), ResponseCode::NotImp);
                return response.send_response(m).await.unwrap_or_else(|_| failed());
            }
            Err(_) => {
                let m = builder.error_msg(request.header(), ResponseCode::FormErr);
                return response.send_response(m).await.unwrap_or_else(|_| failed());
            }
        };
        let name = Name::from(query.name().clone());
        let outcome = (self.zone)().lookup(&name.to_ascii(), query.query_type());
        let sent = match outcome {
            Outcome::NotOurs => match self.forward(query.original().clone()).await {
                Ok(up) => {
                    header.set_response_code(up.response_code());
                    let m = builder.build(
                        header,
                        up.answers(),
                        up.name_servers(),
                        std::iter::empty::<&Record>(),
                        up.additionals(),
                    );
                    response.send_response(m).await
                }
                Err(e) => {
                    tracing::warn!(name = %name, "dns: forwarding: {e}");
                    let m = builder.error_msg(request.header(), ResponseCode::ServFail);
                    response.send_response(m).await
                }
            },
            Outcome::Answer {
                answers,
                additionals,
            } => {
                header.set_authoritative(true);
                let m = builder.build(
                    header,
                    answers.iter(),
                    std::iter::empty(),
                    std::iter::empty(),
                    additionals.iter(),
                );
                response.send_response(m).await
            }
            Outcome::NoData(soa) => {
                header.set_authoritative(true);
                let m = builder.build(
                    header,
                    std::iter::empty(),
                    std::iter::empty(),
                    std::iter::once(&soa),
                    std::iter::empty(),
                );
                response.send_response(m).await
            }
            Outcome::NxDomain(soa) => {
                header.set_authoritative(true);
                header.set_response_code(ResponseCode::NXDomain);
                let m = builder.build(
                    header,
                    std::iter::empty(),
                    std::iter::empty(),
                    std::iter::once(&soa),
                    std::iter::empty(),
                );
                response.send_response(m).await
            }
        };
        sent.unwrap_or_else(|e| {
            tracing::debug!("dns: sending the answer: {e}");
            failed()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::{Port, Service};
    use hickory_server::proto::rr::rdata::A;
    use hickory_server::proto::rr::{RData, RecordType};
    use hickory_server::ServerFuture;

    fn zone() -> Zone {
        Zone {
            domain: "cluster.local".into(),
            services: vec![Service {
                name: "web".into(),
                namespace: "default".into(),
                cluster_ip: Some("10.96.0.20".parse().unwrap()),
                ports: vec![Port {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80,
                    endpoints: Vec::new(),
                }],
                hostnames: Default::default(),
            }],
        }
    }

    /// An upstream on loopback answering every A question with 192.0.2.7.
    async fn upstream() -> SocketAddr {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::new();
                r.set_id(q.id()).set_message_type(MessageType::Response);
                for query in q.queries() {
                    r.add_query(query.clone());
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::A(A::new(192, 0, 2, 7)),
                    ));
                }
                s.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        at
    }

    async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&m.to_vec().unwrap(), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    async fn serve(upstreams: Vec<SocketAddr>) -> (ServerFuture<Handler>, SocketAddr) {
        let z = zone();
        let mut server = ServerFuture::new(Handler {
            zone: Arc::new(move || z.clone()),
            upstreams,
        });
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = udp.local_addr().unwrap();
        server.register_socket(udp);
        (server, at)
    }

    #[tokio::test]
    async fn cluster_names_answered_the_rest_forwarded() {
        let (mut server, at) = serve(vec![upstream().await]).await;
        let r = ask(at, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert_eq!(r.answers()[0].data().to_string(), "10.96.0.20");
        let r = ask(at, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
        let r = ask(at, "example.org.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(!r.authoritative());
        assert_eq!(r.answers()[0].data().to_string(), "192.0.2.7");
        server.shutdown_gracefully().await.unwrap();
        // No upstream: SERVFAIL, as CoreDNS's forward plugin without a healthy upstream.
        let (mut server, at) = serve(Vec::new()).await;
        let r = ask(at, "example.org.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::ServFail);
        server.shutdown_gracefully().await.unwrap();
    }
}
