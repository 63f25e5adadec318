//! A client for the Supervisor's control gateway (`--listen-ctl`, 127.0.0.1:9632 by default): the
//! protocol `hab sup depart <member> --remote-sup <addr>` speaks, reduced to the one request the
//! sidecar makes — marking its pod's predecessor departed so that it stops counting in the quorum.
//!
//! The wire format is Habitat's `SrvProtocol` (components/sup-protocol/src/codec.rs), framed as:
//! - a 32-bit big-endian header: bit 31 "has a transaction", bits 20–25 the length of the message
//!   id, bits 0–19 the length of the body;
//! - a 32-bit big-endian transaction (present when bit 31 is set): bit 31 "is a response", bit 30
//!   "is the last message of the reply", bits 0–29 the transaction id;
//! - the message id (`Handshake`, `SupDepart`, `NetOk`, `NetErr`) and the protobuf body.
//!
//! A connection must start with a `Handshake` carrying the Supervisor's `CTL_SECRET`.

use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY_LEN_MASK: u32 = 0xF_FFFF;
const MESSAGE_ID_MASK: u32 = 0x3F;
const MESSAGE_ID_OFFSET: u32 = 20;
const HAS_TXN: u32 = 1 << 31;
const TXN_ID_MASK: u32 = 0x3FFF_FFFF;
const TXN_RESPONSE: u32 = 1 << 31;
const TXN_COMPLETE: u32 = 1 << 30;

/// `sup.ctl.Handshake` (components/sup-protocol/protocols/ctl.proto).
#[derive(Clone, PartialEq, Message)]
struct Handshake {
    #[prost(string, optional, tag = "1")]
    secret_key: Option<String>,
}

/// `sup.ctl.SupDepart`.
#[derive(Clone, PartialEq, Message)]
struct SupDepart {
    #[prost(string, optional, tag = "1")]
    member_id: Option<String>,
}

/// `sup.net.NetErr` (protocols/net.proto); `NetOk` has no fields.
#[derive(Clone, PartialEq, Message)]
struct NetErr {
    #[prost(int32, optional, tag = "1")]
    code: Option<i32>,
    #[prost(string, optional, tag = "2")]
    msg: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the supervisor's control gateway at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("control gateway connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from the control gateway within {0:?}")]
    Timeout(Duration),
    #[error("the supervisor refused: {0}")]
    Refused(String),
    #[error("the control gateway answered something else: {0}")]
    Protocol(String),
}

/// One framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub message_id: String,
    /// The raw transaction word, when the message has one.
    pub txn: Option<u32>,
    pub body: Vec<u8>,
}

impl Frame {
    fn request(message_id: &str, txn_id: u32, body: Vec<u8>) -> Self {
        Self { message_id: message_id.to_owned(), txn: Some(txn_id & TXN_ID_MASK), body }
    }

    /// The bytes on the wire. Message ids and bodies here are tiny and fixed, far below the limits.
    pub fn encode(&self) -> Vec<u8> {
        let id_len = self.message_id.len() as u32;
        let body_len = self.body.len() as u32;
        assert!(id_len <= MESSAGE_ID_MASK && body_len <= BODY_LEN_MASK, "frame too large to encode");
        let mut header = (id_len << MESSAGE_ID_OFFSET) | body_len;
        if self.txn.is_some() {
            header |= HAS_TXN;
        }
        let mut out = header.to_be_bytes().to_vec();
        if let Some(txn) = self.txn {
            out.extend(txn.to_be_bytes());
        }
        out.extend(self.message_id.as_bytes());
        out.extend(&self.body);
        out
    }

    fn is_last_of_reply(&self) -> bool {
        self.txn.is_none_or(|t| t & TXN_RESPONSE != 0 && t & TXN_COMPLETE != 0)
    }

    /// `Ok` for `NetOk`, the Supervisor's own message for `NetErr`, a protocol error otherwise.
    fn into_result(self) -> Result<(), CtlError> {
        match self.message_id.as_str() {
            "NetOk" => Ok(()),
            "NetErr" => {
                let err = NetErr::decode(self.body.as_slice())
                    .map_err(|e| CtlError::Protocol(format!("undecodable NetErr: {e}")))?;
                Err(CtlError::Refused(
                    err.msg.unwrap_or_else(|| format!("error code {}", err.code.unwrap_or(0))),
                ))
            }
            other => Err(CtlError::Protocol(format!("unexpected message {other:?}"))),
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> Result<Frame, CtlError> {
    let header = stream.read_u32().await?;
    let txn = if header & HAS_TXN != 0 { Some(stream.read_u32().await?) } else { None };
    let mut message_id = vec![0; ((header >> MESSAGE_ID_OFFSET) & MESSAGE_ID_MASK) as usize];
    stream.read_exact(&mut message_id).await?;
    let mut body = vec![0; (header & BODY_LEN_MASK) as usize];
    stream.read_exact(&mut body).await?;
    let message_id = String::from_utf8(message_id)
        .map_err(|_| CtlError::Protocol("a message id that is not UTF-8".into()))?;
    Ok(Frame { message_id, txn, body })
}

/// Sends one request and reads until the last message of its reply.
async fn transact(stream: &mut TcpStream, request: Frame) -> Result<(), CtlError> {
    stream.write_all(&request.encode()).await?;
    loop {
        let reply = read_frame(stream).await?;
        if reply.is_last_of_reply() {
            return reply.into_result();
        }
        // A streamed reply (not sent for the requests made here): an error ends it early.
        if reply.message_id == "NetErr" {
            return reply.into_result();
        }
    }
}

/// The local Supervisor's control gateway.
#[derive(Clone)]
pub struct CtlGateway {
    addr: String,
    secret: String,
    timeout: Duration,
}

impl std::fmt::Debug for CtlGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtlGateway").field("addr", &self.addr).field("secret", &"<redacted>").finish()
    }
}

impl CtlGateway {
    pub fn new(addr: impl Into<String>, secret: impl Into<String>, timeout: Duration) -> Self {
        Self { addr: addr.into(), secret: secret.into(), timeout }
    }

    /// Marks `member_id` departed in the ring (`hab sup depart`): the ring stops counting it in
    /// quorums and never lets that id back in.
    pub async fn depart(&self, member_id: &str) -> Result<(), CtlError> {
        // The Supervisor answers NetOk even to an empty id, and departs nobody.
        if member_id.is_empty() || !member_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CtlError::Protocol(format!("{member_id:?} is not a member id")));
        }
        let exchange = async {
            let mut stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|source| CtlError::Connect { addr: self.addr.clone(), source })?;
            let handshake = Handshake { secret_key: Some(self.secret.clone()) };
            transact(&mut stream, Frame::request("Handshake", 1, handshake.encode_to_vec())).await?;
            let depart = SupDepart { member_id: Some(member_id.to_owned()) };
            transact(&mut stream, Frame::request("SupDepart", 2, depart.encode_to_vec())).await
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| CtlError::Timeout(self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_frame_has_the_habitat_layout() {
        let body = SupDepart { member_id: Some("abc".into()) }.encode_to_vec();
        assert_eq!(body, [0x0a, 3, b'a', b'b', b'c']);
        let bytes = Frame::request("SupDepart", 2, body.clone()).encode();
        let header = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
        assert_eq!(header >> 31, 1, "has a transaction");
        assert_eq!((header >> 20) & 0x3F, 9, "message id length");
        assert_eq!(header & 0xF_FFFF, 5, "body length");
        assert_eq!(u32::from_be_bytes(bytes[4..8].try_into().unwrap()), 2, "a request, transaction 2");
        assert_eq!(&bytes[8..17], b"SupDepart");
        assert_eq!(&bytes[17..], body.as_slice());
    }

    #[test]
    fn net_err_carries_the_supervisors_message() {
        let body = NetErr { code: Some(4), msg: Some("secret key mismatch".into()) }.encode_to_vec();
        let frame = Frame { message_id: "NetErr".into(), txn: Some(TXN_RESPONSE | TXN_COMPLETE | 1), body };
        assert!(frame.is_last_of_reply());
        let err = frame.into_result().unwrap_err();
        assert_eq!(err.to_string(), "the supervisor refused: secret key mismatch");
    }

    #[test]
    fn an_unexpected_message_is_a_protocol_error() {
        let frame = Frame { message_id: "SvcStatus".into(), txn: None, body: vec![] };
        assert!(matches!(frame.into_result(), Err(CtlError::Protocol(_))));
    }

    #[tokio::test]
    async fn depart_handshakes_then_departs_and_reports_a_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for reply in ["NetOk", "NetErr"] {
                let frame = read_frame(&mut socket).await.unwrap();
                seen.push((frame.message_id.clone(), frame.body.clone()));
                let body = if reply == "NetErr" {
                    NetErr { code: Some(0), msg: Some("no such member".into()) }.encode_to_vec()
                } else {
                    Vec::new()
                };
                let txn = frame.txn.unwrap() | TXN_RESPONSE | TXN_COMPLETE;
                let answer = Frame { message_id: reply.into(), txn: Some(txn), body };
                socket.write_all(&answer.encode()).await.unwrap();
            }
            seen
        });
        let gateway = CtlGateway::new(addr, "s3cret", Duration::from_secs(5));
        let err = gateway.depart("0123abcd").await.unwrap_err();
        assert_eq!(err.to_string(), "the supervisor refused: no such member");
        let seen = server.await.unwrap();
        assert_eq!(seen[0].0, "Handshake");
        assert_eq!(Handshake::decode(seen[0].1.as_slice()).unwrap().secret_key.as_deref(), Some("s3cret"));
        assert_eq!(seen[1].0, "SupDepart");
        assert_eq!(SupDepart::decode(seen[1].1.as_slice()).unwrap().member_id.as_deref(), Some("0123abcd"));
    }

    #[tokio::test]
    async fn an_empty_member_id_is_refused_before_anything_is_sent() {
        let gateway = CtlGateway::new("127.0.0.1:1", "x", Duration::from_secs(1));
        assert!(matches!(gateway.depart("").await, Err(CtlError::Protocol(_))));
        assert!(matches!(gateway.depart("a b").await, Err(CtlError::Protocol(_))));
    }

    #[tokio::test]
    async fn a_silent_gateway_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _hold = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(socket);
        });
        let gateway = CtlGateway::new(addr, "x", Duration::from_millis(200));
        assert!(matches!(gateway.depart("m").await, Err(CtlError::Timeout(_))));
    }
}
