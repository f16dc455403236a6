//! A small native ZEO 5 client: connect, handshake, register, pipelined calls, commits.
//!
//! One [`Client`] is one connection driven by one task; pipelining is done by sending several
//! calls before reading their replies ([`Client::send`] / [`Client::next_reply`]), which is
//! what a load generator needs and keeps the client free of locks and background tasks.
//! Server→client calls (`invalidateTransaction`, `info`, blob chunks) are read and dropped.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};

use super::wire::{self, Encoding, ServerMessage, Value, WireError};

/// Anything a ZEO connection can run over (TCP, Unix socket).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type Oid = [u8; 8];
pub type Tid = [u8; 8];

/// The tid clients use for "the current revision".
pub const MAXTID: Tid = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the server closed the connection")]
    Closed,
    #[error("no reply from the server within {0:?}")]
    Timeout(Duration),
    #[error("server error {class_path}: {state:?}")]
    Remote { class_path: String, state: Value },
    #[error("unexpected reply to {method}: {value:?}")]
    Unexpected { method: &'static str, value: Value },
    #[error("conflicts reported at vote: {0:?}")]
    Conflict(Vec<Value>),
}

/// One ZEO connection.
pub struct Client {
    reader: BufReader<ReadHalf<Box<dyn Stream>>>,
    writer: BufWriter<WriteHalf<Box<dyn Stream>>>,
    enc: Encoding,
    next_msgid: i64,
    next_txn: i64,
    max_frame: usize,
    reply_timeout: Duration,
}

/// A reply matched to the msgid of the call it answers.
pub type Reply = (i64, Result<Value, ClientError>);

impl Client {
    /// Connect to `HOST:PORT`, `[v6]:PORT` or a Unix socket path (anything with a `/`), and
    /// do the handshake, answering in the encoding the server announces.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let connect = async {
            let stream: Box<dyn Stream> = if addr.contains('/') {
                Box::new(tokio::net::UnixStream::connect(addr).await?)
            } else {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::Connect {
                addr: addr.into(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
            })?
            .map_err(|source| ClientError::Connect {
                addr: addr.into(),
                source,
            })?;
        let (r, w) = tokio::io::split(stream);
        let mut client = Client {
            reader: BufReader::with_capacity(256 * 1024, r),
            writer: BufWriter::with_capacity(256 * 1024, w),
            enc: Encoding::Pickle,
            next_msgid: 1,
            next_txn: 1,
            max_frame: wire::DEFAULT_MAX_FRAME,
            reply_timeout: timeout,
        };
        let hello = client.read_frame().await?;
        client.enc = wire::parse_server_announcement(&hello)?;
        let answer = wire::handshake::announcement(client.enc);
        wire::write_frame(&mut client.writer, &answer)
            .await
            .map_err(WireError::from)?;
        Ok(client)
    }

    pub fn encoding(&self) -> Encoding {
        self.enc
    }

    /// How long [`Client::next_reply`] waits for a frame.
    pub fn set_reply_timeout(&mut self, t: Duration) {
        self.reply_timeout = t;
    }

    async fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        let read = wire::read_frame(&mut self.reader, self.max_frame);
        match tokio::time::timeout(self.reply_timeout, read).await {
            Err(_) => Err(ClientError::Timeout(self.reply_timeout)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(None)) => Err(ClientError::Closed),
            Ok(Ok(Some(f))) => Ok(f),
        }
    }

    async fn write(&mut self, payload: Vec<u8>) -> Result<(), ClientError> {
        // Straight into the write buffer: one copy of the payload, no framed copy.
        let len = u32::try_from(payload.len())
            .map_err(|_| WireError::Unencodable("a message of 4 GiB or more".into()))?;
        self.writer
            .write_all(&len.to_be_bytes())
            .await
            .map_err(WireError::from)?;
        self.writer
            .write_all(&payload)
            .await
            .map_err(WireError::from)?;
        Ok(())
    }

    /// Queue a synchronous call (buffered until [`Client::flush`] or the buffer fills);
    /// returns its msgid.
    pub async fn send(&mut self, method: &str, args: &[Value]) -> Result<i64, ClientError> {
        let id = self.next_msgid;
        self.next_msgid += 1;
        let payload = wire::encode_request(self.enc, &Value::Int(id), false, method, args)?;
        self.write(payload).await?;
        Ok(id)
    }

    /// Queue a one-way call.
    pub async fn send_oneway(&mut self, method: &str, args: &[Value]) -> Result<(), ClientError> {
        let payload = wire::encode_request(self.enc, &Value::Int(0), true, method, args)?;
        self.write(payload).await
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.flush().await.map_err(WireError::from)?;
        Ok(())
    }

    /// Whether a whole frame is already buffered, so that [`Client::next_reply`] will not
    /// wait on the socket (lets a pipelining caller take all ready replies before it
    /// writes again, instead of one write per reply).
    pub fn reply_ready(&self) -> bool {
        let buf = self.reader.buffer();
        buf.len() >= 4 && {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            buf.len() - 4 >= len
        }
    }

    /// The next reply, skipping server→client calls. An error reply is `Err(Remote)` in the
    /// second element; a broken connection is the outer error.
    pub async fn next_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            let frame = self.read_frame().await?;
            match wire::decode_server_message(self.enc, &frame)? {
                ServerMessage::Call { .. } => continue,
                ServerMessage::Reply { msgid, value } => {
                    return Ok((msgid_int(&msgid)?, Ok(value)));
                }
                ServerMessage::Error {
                    msgid,
                    class_path,
                    state,
                } => {
                    let err = ClientError::Remote { class_path, state };
                    return Ok((msgid_int(&msgid)?, Err(err)));
                }
            }
        }
    }

    /// A synchronous call, waiting for its reply (no other call may be in flight).
    pub async fn call(&mut self, method: &str, args: &[Value]) -> Result<Value, ClientError> {
        let id = self.send(method, args).await?;
        self.flush().await?;
        loop {
            let (got, result) = self.next_reply().await?;
            if got == id {
                return result;
            }
        }
    }

    /// `register(storage, read_only)` → the storage's last tid.
    pub async fn register(&mut self, storage: &str, read_only: bool) -> Result<Tid, ClientError> {
        let v = self
            .call(
                "register",
                &[Value::Str(storage.into()), Value::Bool(read_only)],
            )
            .await?;
        tid_of("register", v)
    }

    pub async fn last_transaction(&mut self) -> Result<Tid, ClientError> {
        let v = self.call("lastTransaction", &[]).await?;
        tid_of("lastTransaction", v)
    }

    pub async fn new_oids(&mut self, n: usize) -> Result<Vec<Oid>, ClientError> {
        let v = self.call("new_oids", &[Value::Int(n as i64)]).await?;
        let (Value::List(items) | Value::Tuple(items)) = &v else {
            return Err(ClientError::Unexpected {
                method: "new_oids",
                value: v,
            });
        };
        items
            .iter()
            .map(|o| tid_of("new_oids", o.clone()))
            .collect()
    }

    /// Queue `loadBefore(oid, before)`; its reply is `(data, start_tid, end_tid)`.
    pub async fn send_load(&mut self, oid: &Oid, before: &Tid) -> Result<i64, ClientError> {
        let args = [Value::Bytes(oid.to_vec()), Value::Bytes(before.to_vec())];
        self.send("loadBefore", &args).await
    }

    /// Commit one transaction storing `(oid, serial, data)` records; returns its tid.
    /// Conflicts reported by `vote` abort the transaction.
    pub async fn commit(
        &mut self,
        description: &str,
        stores: &[(Oid, Tid, Vec<u8>)],
    ) -> Result<Tid, ClientError> {
        let txn = Value::Int(self.next_txn);
        self.next_txn += 1;
        let begin = [
            txn.clone(),
            Value::Bytes(Vec::new()),
            Value::Bytes(description.as_bytes().to_vec()),
            Value::Map(Vec::new()),
            Value::Nil,
            Value::Str(" ".into()),
        ];
        self.send_oneway("tpc_begin", &begin).await?;
        for (oid, serial, data) in stores {
            let args = [
                Value::Bytes(oid.to_vec()),
                Value::Bytes(serial.to_vec()),
                Value::Bytes(data.clone()),
                txn.clone(),
            ];
            self.send_oneway("storea", &args).await?;
        }
        let voted = self.call("vote", std::slice::from_ref(&txn)).await;
        let conflicts = match voted {
            Ok(Value::List(items) | Value::Tuple(items)) => items
                .into_iter()
                .filter(|x| matches!(x, Value::Map(_)))
                .collect::<Vec<_>>(),
            Ok(Value::Nil) => Vec::new(),
            Ok(other) => vec![other],
            Err(e @ (ClientError::Remote { .. } | ClientError::Unexpected { .. })) => {
                self.call("tpc_abort", std::slice::from_ref(&txn)).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !conflicts.is_empty() {
            self.call("tpc_abort", std::slice::from_ref(&txn)).await?;
            return Err(ClientError::Conflict(conflicts));
        }
        let tid = self.call("tpc_finish", &[txn]).await?;
        tid_of("tpc_finish", tid)
    }

    /// Close the connection cleanly.
    pub async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

fn msgid_int(v: &Value) -> Result<i64, ClientError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(ClientError::Unexpected {
            method: "a reply",
            value: other.clone(),
        }),
    }
}

/// An 8-byte id from a reply.
pub fn tid_of(method: &'static str, v: Value) -> Result<Tid, ClientError> {
    match &v {
        Value::Bytes(b) => <[u8; 8]>::try_from(b.as_slice()).map_err(|_| ClientError::Unexpected {
            method,
            value: v.clone(),
        }),
        _ => Err(ClientError::Unexpected { method, value: v }),
    }
}

/// The tid right after `tid` (what ZEO clients pass to loadBefore for "current").
pub fn tid_after(tid: &Tid) -> Tid {
    u64::from_be_bytes(*tid).saturating_add(1).to_be_bytes()
}
