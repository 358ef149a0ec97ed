//! The network of a node, on tokio: advertisements as UDP datagrams to
//! every configured peer, other frames over TCP (a u32 length, then the
//! frame), one lazily opened connection per peer that is reopened after a
//! failure (a frame lost meanwhile is sent again by the protocol). Frames
//! are sealed and opened by the protocol thread; this moves bytes only.

use super::Input;
use crate::group::wire::FRAME_BYTES_MAX;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A frame to send.
pub enum Outgoing {
    Udp(SocketAddr, Vec<u8>),
    Tcp(SocketAddr, Vec<u8>),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds `listen` (UDP and TCP), says on `bound` whether it could, and
/// moves frames until `out` closes.
pub async fn run(
    listen: SocketAddr,
    inputs: Sender<Input>,
    mut out: UnboundedReceiver<Outgoing>,
    bound: Sender<std::io::Result<()>>,
) {
    let sockets = async {
        Ok((
            UdpSocket::bind(listen).await?,
            TcpListener::bind(listen).await?,
        ))
    };
    let (udp, tcp) = match sockets.await {
        Ok(s) => s,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    let _ = bound.send(Ok(()));
    let udp = Arc::new(udp);
    let udp_in = udp.clone();
    let frames = inputs.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match udp_in.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let _ = frames.send(Input::Frame(buf[..n].to_vec(), Some(from)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            tokio::spawn(read_frames(stream, inputs.clone()));
        }
    });
    // The frames in these queues are bounded by the protocol: blocks in
    // flight (each until acknowledged) and their acknowledgements.
    let mut peers: HashMap<SocketAddr, UnboundedSender<Vec<u8>>> = HashMap::new();
    while let Some(o) = out.recv().await {
        match o {
            Outgoing::Udp(addr, frame) => {
                let _ = udp.send_to(&frame, addr).await;
            }
            Outgoing::Tcp(addr, frame) => {
                let tx = peers.entry(addr).or_insert_with(|| {
                    let (tx, rx) = unbounded_channel();
                    tokio::spawn(write_frames(addr, rx));
                    tx
                });
                let _ = tx.send(frame);
            }
        }
    }
}

async fn read_frames(mut stream: TcpStream, inputs: Sender<Input>) {
    loop {
        let Ok(len) = stream.read_u32().await else {
            return;
        };
        if len as usize > FRAME_BYTES_MAX {
            return;
        }
        let mut frame = vec![0u8; len as usize];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        if inputs.send(Input::Frame(frame, None)).is_err() {
            return;
        }
    }
}

/// Writes frames to one peer; a frame that finds no connection is
/// dropped (the protocol sends it again).
async fn write_frames(addr: SocketAddr, mut rx: UnboundedReceiver<Vec<u8>>) {
    let mut stream: Option<TcpStream> = None;
    while let Some(frame) = rx.recv().await {
        if stream.is_none() {
            stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .ok()
                .and_then(|r| r.ok());
            if let Some(s) = &stream {
                let _ = s.set_nodelay(true);
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let mut bytes = Vec::with_capacity(frame.len() + 4);
        bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&frame);
        if s.write_all(&bytes).await.is_err() {
            stream = None;
        }
    }
}
