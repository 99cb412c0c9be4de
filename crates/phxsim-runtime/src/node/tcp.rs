//! tokio TCP conveniences. Simulations pass turmoil's streams to [`Node::connect`] instead.

use super::{LinkHandle, Node};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;

impl Node {
    /// Accepts node links on `listener` until the node stops or the returned task is aborted.
    pub fn listen(&self, listener: TcpListener) -> JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = node.cmds.closed() => return,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((stream, _)) => {
                        // Heartbeats are small and latency-bound; Nagle would only delay them.
                        let _ = stream.set_nodelay(true);
                        node.connect(stream);
                    }
                    // A failed accept (e.g. too many open files) concerns that one peer.
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })
    }

    /// Dials another node and adds the link.
    pub async fn connect_tcp(&self, addr: impl ToSocketAddrs) -> std::io::Result<LinkHandle> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(self.connect(stream))
    }
}
