//! One node-to-node link over any `AsyncRead + AsyncWrite` stream: the greeting, then frames in
//! both directions until either side fails. A link never touches the tracker; it hands decoded
//! messages to the node's driver and writes what the driver gives it.

use super::SharedInterner;
use super::driver::Command;
use phxsim_shard::codec::{self, HEADER_LEN};
use phxsim_shard::{CodecError, Frame, Hello, NodeMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Why a link ended. Reported as [`super::NodeEvent::LinkDown`]; only that link is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The stream ended or failed (the peer closed, crashed or was partitioned away).
    #[error("i/o: {0}")]
    Io(String),
    /// The peer sent bytes that are not a valid frame.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// Nothing arrived on the link for this long (not even a keepalive): the connection is
    /// half-open or the network drops its bytes.
    #[error("nothing received for {0:?}")]
    IdleTimeout(Duration),
    /// The peer sent no greeting in time.
    #[error("no hello within {0:?}")]
    HandshakeTimeout(Duration),
    /// The first frame was not a greeting, or a second greeting came.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// The peer's pool has another size: its shard `n` is not ours.
    #[error("peer pool size {peer} differs from ours ({ours})")]
    PoolSizeMismatch { peer: u32, ours: u32 },
    /// The peer claims our own name.
    #[error("peer uses this node's own name")]
    OwnName,
    /// The peer sent a message its shard refused (see `InboundError`).
    #[error("refused: {0}")]
    Refused(String),
    /// Another link to the same node replaced this one.
    #[error("replaced by a newer link to the same node")]
    Replaced,
    /// The node stopped.
    #[error("node stopped")]
    NodeStopped,
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Io(e.to_string())
    }
}

/// The settings a link needs from its node.
#[derive(Clone)]
pub(crate) struct LinkParams {
    pub hello: Hello,
    pub max_frame_len: usize,
    pub handshake_timeout: Duration,
    pub queue: usize,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    /// Shared with the process's other nodes, if any (see [`super::NodeConfig::meta_interner`]).
    pub interner: Option<SharedInterner>,
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), LinkError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame. The body buffer grows as bytes arrive rather than being allocated from the
/// announced length, so a peer cannot make us reserve `max_frame_len` with four bytes.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    interner: Option<&SharedInterner>,
) -> Result<Frame, LinkError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).await?;
    let len = codec::decode_header(header, max)?;
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if read < len {
        return Err(LinkError::Io("stream ended inside a frame".into()));
    }
    let frame = match interner {
        // a poisoned lock only means another node's task panicked; the set is still sound
        Some(i) => {
            let mut i = i.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            codec::decode_body_interned(&body, &mut i)
        }
        None => codec::decode_body(&body),
    };
    Ok(frame?)
}

/// Runs a link to the end: greeting, registration with the driver, then the read and write
/// loops. Returns why it ended; the driver is told through `Command::LinkDown`.
pub(crate) async fn run<S>(
    stream: S,
    id: u64,
    params: LinkParams,
    cmds: mpsc::Sender<Command>,
) -> LinkError
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let reason = session(stream, id, &params, &cmds).await;
    // The driver may be gone already (the node stopped); nothing left to tell then.
    let _ = cmds
        .send(Command::LinkDown {
            id,
            reason: reason.clone(),
        })
        .await;
    reason
}

async fn session<S>(
    stream: S,
    id: u64,
    params: &LinkParams,
    cmds: &mpsc::Sender<Command>,
) -> LinkError
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let hello = codec::encode_frame(&Frame::Hello(params.hello.clone()));
    if let Err(e) = write_frame(&mut wr, &hello).await {
        return e;
    }
    let peer = match tokio::time::timeout(
        params.handshake_timeout,
        read_frame(&mut rd, params.max_frame_len, params.interner.as_ref()),
    )
    .await
    {
        Err(_) => return LinkError::HandshakeTimeout(params.handshake_timeout),
        Ok(Err(e)) => return e,
        Ok(Ok(Frame::Hello(h))) => h,
        Ok(Ok(_)) => return LinkError::Protocol("first frame is not a hello"),
    };
    if peer.pool_size != params.hello.pool_size {
        return LinkError::PoolSizeMismatch {
            peer: peer.pool_size,
            ours: params.hello.pool_size,
        };
    }
    if peer.node == params.hello.node {
        return LinkError::OwnName;
    }
    let (tx, mut rx) = mpsc::channel::<Arc<Vec<u8>>>(params.queue);
    if cmds
        .send(Command::LinkUp {
            id,
            peer: peer.clone(),
            tx,
        })
        .await
        .is_err()
    {
        return LinkError::NodeStopped;
    }
    let tick = codec::encode_frame(&Frame::Tick);
    let writer = async {
        // Ends when the driver drops the sender (link replaced, node stopped), after writing
        // whatever was queued: a graceful permdown must reach the peers.
        loop {
            match tokio::time::timeout(params.keepalive, rx.recv()).await {
                Ok(Some(bytes)) => write_frame(&mut wr, &bytes).await?,
                Ok(None) => break,
                Err(_) => write_frame(&mut wr, &tick).await?,
            }
        }
        let _ = wr.shutdown().await;
        Err::<(), LinkError>(LinkError::NodeStopped)
    };
    let reader = async {
        loop {
            let frame = tokio::time::timeout(
                params.idle_timeout,
                read_frame(&mut rd, params.max_frame_len, params.interner.as_ref()),
            )
            .await
            .map_err(|_| LinkError::IdleTimeout(params.idle_timeout))??;
            let msg = match frame {
                Frame::Shard(msg) => msg,
                Frame::Tick => continue,
                Frame::Hello(_) => {
                    return Err::<(), LinkError>(LinkError::Protocol("second hello"));
                }
            };
            let msg: NodeMessage = msg;
            if cmds
                .send(Command::Inbound {
                    id,
                    peer: peer.node.clone(),
                    msg,
                })
                .await
                .is_err()
            {
                return Err(LinkError::NodeStopped);
            }
        }
    };
    tokio::select! {
        biased;
        r = writer => r.err().unwrap_or(LinkError::NodeStopped),
        r = reader => r.err().unwrap_or(LinkError::NodeStopped),
    }
}
