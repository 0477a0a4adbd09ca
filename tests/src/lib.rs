//! Support for the black-box tests in `tests/tests/`: a real daemon started
//! in-process on `127.0.0.1:0` over a temporary directory, and a raw
//! protocol connection for byte-level checks.
//!
//! Each test gets its own directory and port, so tests run in parallel.
//!
//! - [`TestServer`]: the daemon in this process, for most tests.
//! - [`daemon`]: the built `logbookd` binary as a subprocess, for signals,
//!   kills and the command line.
//! - [`RawConn`]: frames without a client library, for byte-level checks;
//!   [`raw_frame`] builds frames with any header, valid or not.
//! - [`http`]: one HTTP/1.1 request, for the metrics port and the console.
//! - [`browser`]: headless Chromium driven through ChromeDriver (WebDriver).
//! - [`certs`]: a test PKI (CA, server and client certificates) for TLS.
//! - [`FlakyReads`]: an in-memory file system whose log reads fail on
//!   demand, for the paths that handle read errors.

pub mod browser;
pub mod certs;
pub mod daemon;
pub mod http;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use logbook_protocol::{
    DEFAULT_MAX_FRAME_BYTES, Frame, FrameCodec, Hello, HelloOk, PROTOCOL_VERSION, Request,
    Response, ServerMessage,
};
use logbook_server::net::{self, NetStats, ServerConfig};
use logbook_storage::fs::{LockGuard, MemFs, OpenMode, VFile, Vfs};
use logbook_storage::{Store, StoreConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

/// A daemon running in this process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The engine behind it (for white-box checks and fault injection).
    pub store: Store,
    /// The network server's live figures (connections, buffered bytes).
    pub stats: Arc<NetStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Keeps the data directory alive.
    pub dir: Option<tempfile::TempDir>,
    /// The configurations it was started with, to restart it.
    configs: (StoreConfig, ServerConfig),
}

impl TestServer {
    /// Starts a daemon with default settings over a fresh temporary
    /// directory.
    pub async fn start() -> TestServer {
        TestServer::start_tuned(|_, _| {}).await
    }

    /// Starts a daemon over a fresh temporary directory, after `tune` has
    /// adjusted the default configurations.
    pub async fn start_tuned(tune: impl FnOnce(&mut StoreConfig, &mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = StoreConfig::new(dir.path());
        let mut server = ServerConfig::default();
        tune(&mut store, &mut server);
        let mut s = TestServer::start_with(store, server).await;
        s.dir = Some(dir);
        s
    }

    /// Starts a daemon with the given configurations.
    pub async fn start_with(store: StoreConfig, server: ServerConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        TestServer::serve(listener, store, server)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        config: StoreConfig,
        server: ServerConfig,
    ) -> TestServer {
        let configs = (config.clone(), server.clone());
        let store = Store::open(config).expect("open store");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let stats = Arc::new(NetStats::default());
        let task = tokio::spawn(net::run_with_stats(
            listener,
            store.clone(),
            server,
            Arc::clone(&stats),
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            store,
            stats,
            stop: Some(stop),
            task: Some(task),
            dir: None,
            configs,
        }
    }

    /// Shuts the daemon down gracefully (clients are told it is shutting
    /// down), then starts it again over the same data directory, listening
    /// on the same address, so clients reconnect to it. Its `stats` start
    /// from zero.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.start_again().await;
    }

    async fn start_again(&mut self) {
        // mio sets SO_REUSEADDR, so the port is free again at once, even
        // with the old connections in TIME_WAIT.
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the same address again");
        let (store, server) = self.configs.clone();
        let dir = self.dir.take();
        *self = TestServer::serve(listener, store, server);
        self.dir = dir;
    }

    /// Shuts the server down gracefully and closes the store.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server run");
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("close task")
            .expect("close store");
    }

    /// A raw connection that has completed the handshake.
    pub async fn raw(&self) -> RawConn {
        let mut c = RawConn::connect(self.addr).await;
        c.hello().await;
        c
    }
}

/// A protocol connection without any client-library logic: send requests,
/// read whatever frames come back.
pub struct RawConn {
    framed: Framed<TcpStream, FrameCodec>,
    next_id: u32,
}

impl RawConn {
    /// Connects without saying Hello.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        RawConn {
            framed: Framed::new(s, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)),
            next_id: 1,
        }
    }

    /// Says Hello and expects HelloOk.
    pub async fn hello(&mut self) {
        self.hello_ok().await;
    }

    /// Says Hello and returns the server's HelloOk.
    pub async fn hello_ok(&mut self) -> HelloOk {
        let id = self
            .send(&Request::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "logbook-tests".into(),
                token: None,
                user: None,
            }))
            .await;
        match self.recv().await {
            Some(ServerMessage::Response(Response::HelloOk(ok))) => ok,
            other => panic!("expected HelloOk for {id}, got {other:?}"),
        }
    }

    /// Sends a request with a fresh correlation id; returns the id.
    pub async fn send(&mut self, req: &Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_with_id(req, id).await;
        id
    }

    /// Sends a request with the given correlation id.
    pub async fn send_with_id(&mut self, req: &Request, corr_id: u32) {
        let mut buf = BytesMut::new();
        req.encode(&mut buf, corr_id, DEFAULT_MAX_FRAME_BYTES)
            .expect("encode");
        self.send_raw(&buf).await;
    }

    /// Writes raw bytes, reporting a failure (the server may already have
    /// closed the connection).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.framed.get_mut().write_all(bytes).await
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.expect("write");
    }

    /// The next frame, decoded; `None` when the server closed the
    /// connection (or the frame does not decode).
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        let frame = self.recv_frame().await?;
        ServerMessage::decode(&frame).ok()
    }

    /// The next raw frame; `None` at end of stream or on a frame error.
    pub async fn recv_frame(&mut self) -> Option<Frame> {
        match self.framed.next().await {
            Some(Ok(f)) => Some(f),
            _ => None,
        }
    }

    /// Sends a request and returns its reply, with its correlation id.
    pub async fn call(&mut self, req: &Request) -> (u32, ServerMessage) {
        let id = self.send(req).await;
        let msg = self.recv().await.expect("a reply");
        (id, msg)
    }
}

/// A TCP proxy in front of a server, to break connections the way a
/// network does: [`Proxy::cut`] drops every connection through it at once,
/// with whatever bytes were in transit, while the server keeps running.
/// New connections are forwarded as before.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Bumped by `cut`; each connection ends when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:0` forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let watcher = cuts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watcher.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                    // Both sockets are dropped here.
                });
            }
        });
        Proxy { addr, cuts, task }
    }

    /// Drops every connection open through the proxy.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// A proxy that loses the reply to an append, as a network that fails at
/// the worst moment does: the first connection through it forwards
/// everything until the server answers an `Append`; that answer is
/// dropped and the connection cut, so the client learns nothing of an
/// append the server made durable. Later connections are held until
/// [`LosingProxy::release`] (a client reconnecting to retry waits), then
/// forwarded whole.
pub struct LosingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    lost: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl LosingProxy {
    /// A proxy on `127.0.0.1:0` forwarding to `target`.
    pub async fn start(target: SocketAddr) -> LosingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let lost = Arc::new(tokio::sync::Notify::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (lost2, gate2) = (Arc::clone(&lost), Arc::clone(&gate));
        let task = tokio::spawn(async move {
            let mut first = true;
            while let Ok((client, _)) = listener.accept().await {
                if !first {
                    // Held until released; then every later one passes.
                    if let Ok(p) = gate2.acquire().await {
                        p.forget();
                        gate2.add_permits(1);
                    }
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let lose = first.then(|| Arc::clone(&lost2));
                first = false;
                tokio::spawn(Self::pump(client, server, lose));
            }
        });
        LosingProxy {
            addr,
            lost,
            gate,
            task,
        }
    }

    /// Forwards both ways; with `lose`, drops the first `Append` reply and
    /// cuts the connection, then notifies `lose`.
    async fn pump(client: TcpStream, server: TcpStream, lose: Option<Arc<tokio::sync::Notify>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        });
        loop {
            let mut len = [0u8; 4];
            if server_rx.read_exact(&mut len).await.is_err() {
                break;
            }
            let mut rest = vec![0u8; u32::from_le_bytes(len) as usize];
            if server_rx.read_exact(&mut rest).await.is_err() {
                break;
            }
            // Kind at frame byte 5, opcode at 6 (PROTOCOL.md §2.1).
            let kind = rest.get(1).copied();
            let opcode = rest.get(2..4).map(|b| u16::from_le_bytes([b[0], b[1]]));
            if let Some(lost) = &lose
                && kind == Some(2)
                && opcode == Some(logbook_protocol::Opcode::Append.as_u16())
            {
                up.abort();
                lost.notify_one();
                return;
            }
            if client_tx.write_all(&len).await.is_err() || client_tx.write_all(&rest).await.is_err()
            {
                break;
            }
        }
        up.abort();
    }

    /// Waits until the proxy has dropped an append's reply.
    pub async fn lost(&self) {
        self.lost.notified().await;
    }

    /// Lets held and later connections through.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

impl Drop for LosingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The header fields of a frame built by [`raw_frame`], any of which may
/// break the protocol's rules.
#[derive(Clone, Copy, Debug)]
pub struct RawHeader {
    /// Protocol version byte.
    pub version: u8,
    /// Kind byte (1 Request, 2 Response, 3 Push, 4 Error).
    pub kind: u8,
    /// Opcode.
    pub opcode: u16,
    /// Flags (bit 0 = END).
    pub flags: u16,
    /// Correlation id.
    pub corr_id: u32,
}

impl RawHeader {
    /// A well-formed request header.
    pub fn request(opcode: logbook_protocol::Opcode, corr_id: u32) -> RawHeader {
        RawHeader {
            version: PROTOCOL_VERSION,
            kind: 1,
            opcode: opcode.as_u16(),
            flags: 0,
            corr_id,
        }
    }
}

/// A whole frame with `header` and `body` (any bytes), with the length and
/// crc32c filled in correctly, so that only the fields the test chose
/// break the rules.
pub fn raw_frame(header: RawHeader, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(20 + body.len());
    f.extend_from_slice(&((16 + body.len()) as u32).to_le_bytes());
    f.push(header.version);
    f.push(header.kind);
    f.extend_from_slice(&header.opcode.to_le_bytes());
    f.extend_from_slice(&header.flags.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&header.corr_id.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&f[4..16]), body);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// An in-memory file system ([`MemFs`]) whose reads of log segments fail
/// with `EIO` on demand: every read while [`FlakyReads::fail_all`] is on,
/// and the next `n` after [`FlakyReads::fail_next`]. Writes, syncs and
/// index reads are untouched, so appends go on while readers fail. Clones
/// share files and switches.
#[derive(Clone, Debug, Default)]
pub struct FlakyReads {
    fs: MemFs,
    faults: Arc<ReadFaults>,
}

#[derive(Debug, Default)]
struct ReadFaults {
    all: AtomicBool,
    next: AtomicU64,
}

impl ReadFaults {
    /// Whether this read fails (consuming one of the next `n`).
    fn take(&self) -> bool {
        self.all.load(Ordering::SeqCst)
            || self
                .next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

impl FlakyReads {
    /// A fresh, empty file system with no fault armed.
    pub fn new() -> FlakyReads {
        FlakyReads::default()
    }

    /// Makes every log read fail (`true`) or none (`false`).
    pub fn fail_all(&self, on: bool) {
        self.faults.all.store(on, Ordering::SeqCst);
    }

    /// Makes the next `n` log reads fail.
    pub fn fail_next(&self, n: u64) {
        self.faults.next.store(n, Ordering::SeqCst);
    }

    /// The files underneath, to damage them.
    pub fn files(&self) -> &MemFs {
        &self.fs
    }

    /// Log reads still to fail from [`FlakyReads::fail_next`].
    pub fn pending_failures(&self) -> u64 {
        self.faults.next.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct FlakyFile {
    file: Arc<dyn VFile>,
    faults: Arc<ReadFaults>,
}

impl VFile for FlakyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if self.faults.take() {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn reopen(&self) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(FlakyFile {
            file: self.file.reopen()?,
            faults: Arc::clone(&self.faults),
        }))
    }

    fn drop_cache(&self) -> io::Result<()> {
        self.file.drop_cache()
    }
}

impl Vfs for FlakyReads {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.fs.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.fs.list_dir(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        let file = self.fs.open(path, mode)?;
        if path.extension().is_some_and(|e| e == "seg") {
            Ok(Arc::new(FlakyFile {
                file,
                faults: Arc::clone(&self.faults),
            }))
        } else {
            Ok(file)
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.fs.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.fs.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.fs.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.fs.exists(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.fs.try_lock(path)
    }
}

/// Awaits `f`, failing the test if it takes longer than `secs` seconds: a
/// bound on a test that would otherwise hang when the server misbehaves,
/// never a way to wait for something.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing after {secs} s"),
    }
}

/// A loopback port for a daemon that must listen where it was told (a
/// cluster's members are named before they start, a restarted daemon goes
/// back to its address). Taken below the kernel's ephemeral range (32768
/// and up on Linux), from which every port-0 listener and every outgoing
/// connection of the other tests draws: a port picked there, released and
/// then bound by the daemon, could be taken in between (this failed CI
/// with `Address already in use`). Ports are handed out once per process
/// (tests run as threads), from an offset of the process id, each checked
/// free when handed out.
pub fn reserved_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

/// A payload of `n` bytes.
pub fn payload(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}
