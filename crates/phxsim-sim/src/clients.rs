//! The browsers of a simulation and the server they talk to. Every node host runs the
//! runtime's real Channels server on turmoil TCP; one more host runs every client (the
//! runtime's real client), each driven by the scripted timeline and observed frame by frame.

use crate::checkers::PresenceList;
use crate::event::{Event, FrameBody};
use crate::lossy::{BrowserConn, Loss, LossyStream};
use crate::pipe::{MemoryBrowsers, PipeEnd, Pipes};
use crate::scenario::Scenario;
use crate::snapshot::{Name, meta_of_fields};
use crate::world::{
    ClientControl, RunOptions, SharedRef, SimClient, WS_PORT, derive_seed, lock, now_ms,
    segment_lost_report,
};
use phxsim_runtime::client::{Absorber, Client, ClientConfig, ClientEvent, FrameCache};
use phxsim_runtime::server::{Server, ServerConfig};
use phxsim_wire::{Frame, Serializer};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use turmoil::net::TcpStream;

/// The checker's list of a client: `key → phx_ref → meta`, read from the list the client
/// keeps (what `presence_list` makes of its view, without building the view first).
pub fn client_list(client: &Client) -> PresenceList {
    client.with_presences(|p| {
        let mut out = PresenceList::new();
        for (key, presence) in p.state().iter() {
            let entry = out.entry(Name::from(key)).or_default();
            for m in &presence.metas {
                if let Some(r) = m.phx_ref_str() {
                    entry.insert(Name::from(r), meta_of_fields(m.as_map()));
                }
            }
        }
        out
    })
}

/// The Channels server of every node in a run: Phoenix's defaults, plus the planted server bug
/// if any, with the smallest read buffer (a simulated browser sends only joins and heartbeats:
/// a join a little over 256 bytes takes two reads, and every connection holds 256 bytes less).
pub fn server_config(_s: &Scenario, o: &RunOptions) -> ServerConfig {
    ServerConfig {
        mutation: o.planted.and_then(crate::planted::PlantedBug::server),
        read_buffer_size: 256,
        ..ServerConfig::default()
    }
}

/// Starts the node's Channels server on `port` of this host: every accepted turmoil stream is
/// served by the runtime's real server, through `link` (the server's end of a browser link,
/// which may lose segments).
pub(crate) async fn spawn_server<L>(server: &Server, port: u16, link: L) -> std::io::Result<()>
where
    L: Fn(TcpStream) -> LossyStream<TcpStream> + Send + 'static,
{
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let server = server.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            server.serve_connection(link(stream));
        }
    });
    Ok(())
}

/// Serves the in-memory browser links made to this node (see [`crate::pipe`]) with the same
/// server as its TCP ones, through `link`.
pub(crate) fn serve_pipes<L>(
    server: &Server,
    mut accepted: mpsc::UnboundedReceiver<PipeEnd>,
    link: L,
) where
    L: Fn(PipeEnd) -> LossyStream<PipeEnd> + Send + 'static,
{
    let server = server.clone();
    tokio::spawn(async move {
        while let Some(end) = accepted.recv().await {
            server.serve_connection(link(end));
        }
    });
}

/// A browser's end of its link to its node: a turmoil TCP stream, or an in-memory link.
pub(crate) enum BrowserStream {
    Tcp(TcpStream),
    Memory(PipeEnd),
}

impl BrowserStream {
    /// Connects to `node`'s Channels endpoint: over `pipes` if given, else over turmoil TCP.
    async fn connect(pipes: Option<Pipes>, node: &str) -> std::io::Result<BrowserStream> {
        Ok(match pipes {
            Some(pipes) => BrowserStream::Memory(pipes.connect(node).await?),
            None => BrowserStream::Tcp(TcpStream::connect((node, WS_PORT)).await?),
        })
    }

    /// The connection as both ends name it (for `drop_mid_join`'s reset).
    fn conn(&self) -> Option<BrowserConn> {
        match self {
            BrowserStream::Tcp(s) => s.local_addr().ok().map(BrowserConn::Tcp),
            BrowserStream::Memory(end) => Some(BrowserConn::Memory(end.id())),
        }
    }
}

impl AsyncRead for BrowserStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BrowserStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BrowserStream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BrowserStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BrowserStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BrowserStream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BrowserStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BrowserStream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BrowserStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BrowserStream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

fn frame_event(client: &str, dir: &str, frame: &Frame) -> Event {
    let body = match frame {
        // the event name helps a reader (and the trace); the data is the frame as sent
        Frame::Text(text) => FrameBody::Text {
            event: text_event(text),
            data: text.clone(),
        },
        Frame::Binary(bytes) => FrameBody::Binary {
            data_hex: data_encoding::HEXLOWER.encode(bytes),
        },
    };
    Event::Frame {
        client: client.to_owned(),
        dir: dir.to_owned(),
        body,
    }
}

/// The event name of a text frame: element 3 of an array (V2) or the `event` field of an
/// object (V1), if it is a string; `None` if the frame is not JSON at all.
///
/// The same as parsing the frame into a `serde_json::Value` and reading it there, but without
/// building the payload: serde_json reads and checks every token the same way (strings,
/// numbers, nesting depth, trailing characters), only nothing is kept.
fn text_event(text: &str) -> Option<String> {
    serde_json::from_str::<EventName>(text)
        .ok()
        .and_then(|e| e.0)
}

/// What [`text_event`] reads of a value: the event name of a frame, or a string itself.
struct EventName(Option<String>);

impl<'de> serde::Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor { frame: true })
    }
}

/// Any JSON value, checked and dropped. As a frame (`frame`) it yields its event name; as an
/// element or field it yields itself if it is a string.
#[derive(Clone, Copy)]
struct ValueVisitor {
    frame: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for ValueVisitor {
    type Value = EventName;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<EventName, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = EventName;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<EventName, E> {
        Ok(EventName(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<EventName, E> {
        Ok(EventName(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<EventName, E> {
        Ok(EventName(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<EventName, E> {
        Ok(EventName(None))
    }
    fn visit_str<E>(self, v: &str) -> Result<EventName, E> {
        Ok(EventName((!self.frame).then(|| v.to_owned())))
    }
    fn visit_unit<E>(self) -> Result<EventName, E> {
        Ok(EventName(None))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EventName, A::Error> {
        let element = ValueVisitor { frame: false };
        let mut event = None;
        let mut i = 0usize;
        while let Some(v) = seq.next_element_seed(element)? {
            if self.frame && i == 3 {
                event = v.0;
            }
            i += 1;
        }
        Ok(EventName(event))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EventName, A::Error> {
        // a repeated key keeps its last value, as in a `Value` object
        let field = ValueVisitor { frame: false };
        let mut event = None;
        while let Some(is_event) = map.next_key_seed(IsEventKey)? {
            let v = map.next_value_seed(field)?;
            if self.frame && is_event {
                event = v.0;
            }
        }
        Ok(EventName(event))
    }
}

/// An object key: whether it is `event`.
struct IsEventKey;

impl<'de> serde::de::DeserializeSeed<'de> for IsEventKey {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(IsEventKey)
    }
}

impl serde::de::Visitor<'_> for IsEventKey {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == "event")
    }
}

/// What a simulated browser reads from its stream at once, in bytes: a `presence_diff` of
/// one join fits (a batch of joins takes more reads), and thousands of browsers do not hold
/// phoenix.js's real-socket 8 KiB each, nor zero a cold 1 KiB before every read (tungstenite
/// zeroes the whole read buffer each time: about 2 % of a 3 000-client run at 1 KiB).
const CLIENT_READ_BUFFER: usize = 256;

/// The first browsers' host; a scenario's `"clients"` (in `[[network.links]]`) names every
/// browsers' host.
pub const CLIENTS_HOST: &str = "clients";

/// The most browsers one host runs: a host dials from at most 64 512 ports (1024..=65535).
pub const CLIENTS_PER_HOST: usize = 16_384;

/// For speed, one browsers' host per this many browsers, rounded up (see [`clients_per_host`]).
const BROWSERS_PER_HOST_FOR_SPEED: usize = 256;

/// Browsers' hosts are added for speed only while there are at most this many links between
/// browsers' hosts and nodes (see [`clients_per_host`]).
const BROWSER_LINKS_MAX: usize = 32;

/// How many browsers one host runs in a scenario of `clients` browsers and `nodes` nodes.
///
/// turmoil keeps one queue of in-flight segments per pair of hosts, and each segment sent
/// scans its pair's whole queue (and takes the due ones out of its middle): a join storm of
/// 3 000 browsers on one host queues about a thousand segments per node link, and that scan
/// was an eighth of the run. More browsers' hosts make shorter queues. But at every step, each
/// host's delivery walks every link of the simulation, hosts × links: with 16 nodes, 32 hosts
/// made `pop_16k` half as slow again. So browsers get one host per
/// [`BROWSERS_PER_HOST_FOR_SPEED`] only while the browsers' links to nodes stay at most
/// [`BROWSER_LINKS_MAX`] (ten hosts at 3 nodes, two at 16), and as many hosts as ports need.
/// Hosts get equal shares, the last one the rest. A scenario of at most 256 browsers, or of
/// 17 nodes or more, runs on the one host `clients` up to [`CLIENTS_PER_HOST`] browsers.
pub fn clients_per_host(clients: usize, nodes: usize) -> usize {
    let for_ports = clients.div_ceil(CLIENTS_PER_HOST);
    let for_speed = clients
        .div_ceil(BROWSERS_PER_HOST_FOR_SPEED)
        .min(BROWSER_LINKS_MAX / nodes.max(1));
    clients.div_ceil(for_ports.max(for_speed).max(1)).max(1)
}

/// How many browsers one host of this run runs.
fn per_host(s: &Scenario, o: &RunOptions) -> usize {
    o.clients_per_host
        .unwrap_or_else(|| clients_per_host(s.clients.len(), s.nodes.len()))
        .max(1)
}

/// The names of the browsers' hosts of `s` (its clients in order, [`clients_per_host`] to a
/// host unless `o` says otherwise): `clients`, then `clients-2`, `clients-3`, ...; none
/// without clients.
pub fn browser_hosts(s: &Scenario, o: &RunOptions) -> Vec<String> {
    (0..s.clients.len().div_ceil(per_host(s, o)))
        .map(browser_host_name)
        .collect()
}

fn browser_host_name(i: usize) -> String {
    if i == 0 {
        CLIENTS_HOST.to_owned()
    } else {
        format!("{CLIENTS_HOST}-{}", i + 1)
    }
}

/// What a scenario's host names stand for: `"clients"` for every browsers' host, any other name
/// for the node itself.
#[derive(Clone, Debug)]
pub(crate) struct HostNames {
    browsers: Vec<String>,
}

impl HostNames {
    pub(crate) fn of(s: &Scenario, o: &RunOptions) -> HostNames {
        HostNames {
            browsers: browser_hosts(s, o),
        }
    }

    /// The turmoil hosts `name` stands for (none for `"clients"` in a scenario without clients).
    pub(crate) fn hosts<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        if name == CLIENTS_HOST {
            self.browsers.iter().map(String::as_str).collect()
        } else {
            vec![name]
        }
    }

    /// The pairs of turmoil hosts the link `x`–`y` stands for.
    pub(crate) fn pairs<'a>(&'a self, x: &'a str, y: &'a str) -> Vec<(&'a str, &'a str)> {
        let ys = self.hosts(y);
        self.hosts(x)
            .into_iter()
            .flat_map(|x| ys.iter().map(move |y| (x, *y)))
            .collect()
    }
}

/// The browsers' hosts, [`clients_per_host`] clients each, every client connected to its own
/// node. A browser only ever talks to its node, so the links between these hosts and node `n`
/// are the links of `n`'s browsers (what `between = ["n", "clients"]` sets), and turmoil polls a
/// few hosts per step for all of them instead of one per node or per browser.
pub(crate) fn client_host<'a>(
    sim: &mut turmoil::Sim<'a>,
    s: &'a Scenario,
    o: &RunOptions,
    shared: SharedRef,
) {
    // every browsers' host decodes each broadcast diff once between them: a cache per host
    // would decode each diff once per host
    let frame_cache = FrameCache::new();
    for (i, specs) in s.clients.chunks(per_host(s, o)).enumerate() {
        browser_host(
            &frame_cache,
            sim,
            browser_host_name(i),
            specs,
            s,
            o,
            shared.clone(),
        );
    }
}

/// One browsers' host running `specs`.
///
/// The host's closure borrows the specs from the scenario, which outlives the simulation;
/// its software gets a copy of them only to start its browsers, and keeps what it reads later
/// ([`Browser`]: a name and a node), which is a fraction of a spec.
fn browser_host<'a>(
    frame_cache: &FrameCache,
    sim: &mut turmoil::Sim<'a>,
    host: String,
    specs: &'a [crate::scenario::ClientSpec],
    s: &Scenario,
    o: &RunOptions,
    shared: SharedRef,
) {
    let (seed, mutation, frames, population_frames) = (
        o.seed,
        o.planted.and_then(crate::planted::PlantedBug::client),
        o.transcript,
        o.transcript && o.population_frames,
    );
    let absorb = o.browser_reads != crate::world::BrowserReads::Task;
    let rto = Duration::from_millis(s.network.rto_ms);
    let frame_cache = frame_cache.clone();
    sim.host(host, move || {
        let (shared, frame_cache) = (shared.clone(), frame_cache.clone());
        let (memory, pipes) = {
            let s = lock(&shared);
            (s.memory_browsers.clone(), s.pipes.clone())
        };
        let browsers = Browser::all(specs);
        let links = Arc::new(HostLinks {
            seed,
            loss: Loss {
                rate: lock(&shared).client_loss_rate.clone(),
                rto,
            },
            browsers: browsers.clone(),
            shared: shared.clone(),
            pipes,
            memory,
            absorbers: specs.iter().map(|_| OnceLock::new()).collect(),
        });
        // read once, while the browsers start
        let specs = specs.to_vec();
        async move {
            // the timeline's controls for every browser of this host, tagged with its place
            let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
            let mut clients: Vec<Client> = Vec::with_capacity(specs.len());
            let mut configs = BrowserConfigs::default();
            for (place, spec) in specs.into_iter().enumerate() {
                let mut cfg = configs.config(&spec, seed);
                cfg.mutation = mutation;
                cfg.frame_cache = Some(frame_cache.clone());
                let (host_links, mut connections) = (links.clone(), 0u64);
                let client = Client::start(cfg, move || {
                    let n = connections;
                    connections += 1;
                    host_links.connect(place as u32, n)
                });
                // before its task runs (this host's setup does not yield), so its first
                // connection has it
                if absorb {
                    let _ = links.absorbers[place].set(client.absorber());
                }
                lock(&shared).clients.insert(
                    spec.name.clone(),
                    SimClient {
                        node: Name::from(spec.node.as_str()),
                        topic: Name::from(spec.topic.as_str()),
                        user: Name::from(spec.user()),
                        client: client.clone(),
                        ctl: (ctl_tx.clone(), place as u32),
                    },
                );
                // a population client's messages reach the checkers only if it is one of the
                // sample they replay (named clients all are), and its frames the transcript
                // only if it is, or on request
                let observed = lock(&shared)
                    .replayed
                    .as_ref()
                    .is_none_or(|r| r.contains(&spec.name));
                // frames only matter to a transcript: without one, the client copies none; and
                // the presence messages of a client outside the sample matter to nobody. Its
                // connection and channel events only matter to a transcript too (the checkers
                // read the channel events of the clients they replay): without one, such a
                // client has no observer at all, which spares a channel and a task per browser
                let events = if frames && (observed || population_frames) {
                    Some(client.subscribe())
                } else if observed {
                    Some(client.subscribe_without_frames())
                } else if frames {
                    Some(client.subscribe_lifecycle())
                } else {
                    None
                };
                if let Some(events) = events {
                    tokio::spawn(forward_events(
                        spec.name.clone(),
                        events,
                        shared.clone(),
                        observed,
                    ));
                }
                clients.push(client);
            }
            drop(ctl_tx);
            obey_all(&clients, &browsers, ctl_rx, shared).await;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// The configurations of one host's browsers, built so that browsers share what they have in
/// common: one URL per node, one topic string per topic, one join payload per run of browsers
/// with equal metas (a population's browsers are consecutive and share their meta). Sharing
/// changes no byte a browser sends: a config is equal, field by field, to the one built
/// for the browser alone ([`BrowserConfigs::config_alone`]); only the copies are fewer.
#[derive(Default)]
struct BrowserConfigs {
    urls: BTreeMap<String, Arc<str>>,
    topics: BTreeMap<String, Arc<str>>,
    /// The last meta met and its join payload.
    payload: Option<(Arc<Json>, Arc<Json>)>,
}

impl BrowserConfigs {
    /// The configuration of the browser `spec` in the run with `seed` (without the planted
    /// bug and the frame cache, which the caller adds).
    fn config(&mut self, spec: &crate::scenario::ClientSpec, seed: u64) -> ClientConfig {
        let url = Arc::clone(
            self.urls
                .entry(spec.node.clone())
                .or_insert_with(|| url_of(&spec.node).into()),
        );
        let topic = Arc::clone(
            self.topics
                .entry(spec.topic.clone())
                .or_insert_with(|| spec.topic.as_str().into()),
        );
        let payload = match &self.payload {
            // a population's clients hold one meta; others may still be equal
            Some((meta, payload)) if Arc::ptr_eq(meta, &spec.meta) || *meta == spec.meta => {
                Arc::clone(payload)
            }
            _ => {
                let payload = ClientConfig::meta_payload(Json::clone(&spec.meta));
                self.payload = Some((Arc::clone(&spec.meta), Arc::clone(&payload)));
                payload
            }
        };
        browser_settings(
            ClientConfig::new(url, spec.user(), topic).with_join_payload(payload),
            spec,
            seed,
        )
    }

    /// What [`BrowserConfigs::config`] gives, built for `spec` alone (the slow way it
    /// replaces, kept for the test that compares them).
    #[cfg(test)]
    fn config_alone(spec: &crate::scenario::ClientSpec, seed: u64) -> ClientConfig {
        browser_settings(
            ClientConfig::new(url_of(&spec.node), spec.user(), spec.topic.clone())
                .with_meta(Json::clone(&spec.meta)),
            spec,
            seed,
        )
    }
}

/// The Channels endpoint of `node`.
fn url_of(node: &str) -> String {
    format!("ws://{node}:{WS_PORT}/socket/websocket")
}

/// A simulated browser's settings besides its URL, user, topic and join payload.
fn browser_settings(
    mut cfg: ClientConfig,
    spec: &crate::scenario::ClientSpec,
    seed: u64,
) -> ClientConfig {
    cfg.serializer = if spec.vsn == "1.0.0" {
        Serializer::V1
    } else {
        Serializer::V2
    };
    cfg.seed = derive_seed(seed, &format!("client/{}", spec.name));
    cfg.auto_join = false;
    // a diff fits in one read; a state takes more reads, each a copy in memory
    cfg.read_buffer_size = CLIENT_READ_BUFFER;
    // a lean WebSocket, and an idle browser does not keep the largest frame it read
    cfg.lean_websocket = true;
    // a partitioned SYN is never answered: bound each attempt
    cfg.timeout = Duration::from_secs(10);
    cfg
}

/// What a browsers' host keeps of each browser's spec once the browser started: what opening
/// its links and obeying its controls read.
struct Browser {
    name: String,
    /// Shared by the host's browsers of one node.
    node: Arc<str>,
}

impl Browser {
    /// The browsers of `specs`, in order.
    fn all(specs: &[crate::scenario::ClientSpec]) -> Arc<[Browser]> {
        let mut nodes: BTreeMap<&str, Arc<str>> = BTreeMap::new();
        specs
            .iter()
            .map(|spec| Browser {
                name: spec.name.clone(),
                node: Arc::clone(
                    nodes
                        .entry(spec.node.as_str())
                        .or_insert_with(|| spec.node.as_str().into()),
                ),
            })
            .collect()
    }
}

/// What the browsers of one host need to open their links, held once for all of them: a
/// browser's connect closure lives as long as the browser, and up to 16 384 run on a host.
struct HostLinks {
    seed: u64,
    /// Each connection draws its losses afresh.
    loss: Loss,
    browsers: Arc<[Browser]>,
    shared: SharedRef,
    pipes: Option<Pipes>,
    memory: MemoryBrowsers,
    /// Each browser's [`Absorber`], by place, once it started: an in-memory link offers it
    /// what arrives while the browser waits (see `client/absorb.rs` in phxsim-runtime).
    absorbers: Box<[OnceLock<Absorber>]>,
}

impl HostLinks {
    /// Opens connection number `n` of the browser at `place`: its end of the link, which may
    /// lose segments.
    fn connect(
        &self,
        place: u32,
        n: u64,
    ) -> impl std::future::Future<Output = std::io::Result<LossyStream<BrowserStream>>> + Send + use<>
    {
        let browser = &self.browsers[place as usize];
        let (name, node) = (browser.name.clone(), browser.node.to_string());
        let link_seed = derive_seed(self.seed, &format!("client-loss/browser/{name}/{n}"));
        let loss = self.loss.clone();
        let shared = self.shared.clone();
        let pipes = self.pipes.clone().filter(|_| self.memory.contains(&name));
        let absorber = self
            .absorbers
            .get(place as usize)
            .and_then(|a| a.get().cloned());
        async move {
            let stream = BrowserStream::connect(pipes, &node).await?;
            if let (BrowserStream::Memory(end), Some(absorber)) = (&stream, absorber) {
                end.absorb_with(absorber);
            }
            if let (Some(r), Some(conn)) = (lock(&shared).resets.as_mut(), stream.conn()) {
                r.connected(&name, conn);
            }
            let report = segment_lost_report(shared, name, node, true);
            Ok(LossyStream::new(stream, loss, link_seed).reporting(report))
        }
    }
}

/// Applies the timeline's controls to the browsers of one host, in the order they were sent:
/// one task and one queue per host rather than per browser (a queue's first block alone is
/// about 800 bytes, and runs have up to 200 000 browsers). A `drop_mid_join` waits inside the
/// join exchange and holds back the browser's later controls meanwhile: the first one hands
/// the browser to a task of its own, which takes every later control of that browser in turn.
async fn obey_all(
    clients: &[Client],
    browsers: &[Browser],
    mut ctl: mpsc::UnboundedReceiver<(u32, ClientControl)>,
    shared: SharedRef,
) {
    let mut own_task: BTreeMap<u32, mpsc::UnboundedSender<ClientControl>> = BTreeMap::new();
    while let Some((place, c)) = ctl.recv().await {
        let (Some(client), Some(browser)) =
            (clients.get(place as usize), browsers.get(place as usize))
        else {
            continue;
        };
        if matches!(c, ClientControl::DropMidJoin(_)) && !own_task.contains_key(&place) {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(obey(
                client.clone(),
                rx,
                browser.name.clone(),
                shared.clone(),
            ));
            own_task.insert(place, tx);
        }
        match own_task.get(&place) {
            Some(tx) => {
                let _ = tx.send(c);
            }
            None => apply_control(client, c),
        }
    }
}

/// One control that takes effect at once (every one but `DropMidJoin`).
fn apply_control(client: &Client, c: ClientControl) {
    match c {
        ClientControl::Join => client.join(),
        ClientControl::Leave => client.leave(),
        ClientControl::Update(meta) => client.update_meta(*meta),
        ClientControl::Disconnect => {
            client.drop_connection();
            client.disconnect();
        }
        ClientControl::Reconnect => client.connect(),
        ClientControl::CrashChannel => client.push("crash", json!({})),
        ClientControl::DropMidJoin(_) => {}
    }
}

/// Applies the timeline's controls to one browser once it has had a `drop_mid_join`.
async fn obey(
    client: Client,
    mut ctl: mpsc::UnboundedReceiver<ClientControl>,
    name: String,
    shared: SharedRef,
) {
    while let Some(c) = ctl.recv().await {
        match c {
            ClientControl::DropMidJoin(after) => {
                client.drop_connection();
                client.disconnect();
                client.connect();
                client.join();
                // the next control waits: a few milliseconds at most (see the harness)
                tokio::time::sleep(after).await;
                if let Some(r) = lock(&shared).resets.as_mut() {
                    r.reset(&name);
                }
                client.drop_connection();
                client.disconnect();
            }
            c => apply_control(&client, c),
        }
    }
}

/// Emits one client's events into the run's stream, stamped with simulated time; its presence
/// messages only if it is `observed` (one of the clients the checkers replay).
async fn forward_events(
    name: String,
    mut events: mpsc::UnboundedReceiver<Box<phxsim_runtime::client::Stamped>>,
    shared: SharedRef,
    observed: bool,
) {
    let base = tokio::time::Instant::now();
    let base_ms = now_ms();
    while let Some(st) = events.recv().await {
        let t = base_ms + st.at.saturating_duration_since(base).as_millis() as u64;
        let mut sh = lock(&shared);
        match st.event {
            ClientEvent::Sent(f) => sh.events.push_with(t, || frame_event(&name, "out", &f)),
            ClientEvent::Received(f) => sh.events.push_with(t, || frame_event(&name, "in", &f)),
            ClientEvent::Presence { .. } if !observed => {}
            ClientEvent::Presence { event, payload, .. } => sh.events.push(
                t,
                Event::Presence {
                    client: name.clone(),
                    event,
                    payload,
                },
            ),
            ClientEvent::Channel { state, join_ref } => {
                sh.events.push(
                    t,
                    Event::Channel {
                        client: name.clone(),
                        state: format!("{state:?}"),
                        join_ref,
                    },
                );
            }
            ClientEvent::Connected => sh.events.push(
                t,
                Event::Connected {
                    client: name.clone(),
                },
            ),
            ClientEvent::Disconnected { reason, reconnect } => sh.events.push(
                t,
                Event::Disconnected {
                    client: name.clone(),
                    reason,
                    reconnect,
                },
            ),
            ClientEvent::Timeout { event } => sh.events.push(
                t,
                Event::Timeout {
                    client: name.clone(),
                    event,
                },
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `text_event` replaces: the whole frame parsed into a `Value`.
    fn by_value(text: &str) -> Option<String> {
        serde_json::from_str::<Json>(text)
            .ok()
            .and_then(|v| match v {
                Json::Array(a) => a.get(3).and_then(Json::as_str).map(str::to_owned),
                Json::Object(o) => o.get("event").and_then(Json::as_str).map(str::to_owned),
                _ => None,
            })
    }

    #[test]
    fn text_event_reads_what_a_value_would() {
        let deep = format!("[1,2,3,\"e\",{}{}]", "[".repeat(200), "]".repeat(200));
        let shallow = format!("[1,2,3,\"e\",{}{}]", "[".repeat(100), "]".repeat(100));
        let cases = [
            r#"["1","2","room:lobby","phx_join",{"meta":{"n":[1,2.5,-3,true,null]}}]"#,
            r#"[null,null,"room:lobby","presence_diff",{"joins":{},"leaves":{}}]"#,
            r#"{"topic":"t","event":"phx_reply","payload":{},"ref":"1"}"#,
            r#"{"event":"a","event":"b"}"#,
            r#"{"event":"a","event":1}"#,
            r#"{"ev\u0065nt":"esc\"aped\n"}"#,
            r#"{"x":{"event":"inner"}}"#,
            r#"[1,2,3,4]"#,
            r#"[1,2,3,[4]]"#,
            r#"[1,2,3,"d","e","f"]"#,
            r#"[1,2,3]"#,
            r#"[1,2,3,"x",]"#,
            r#"{"event":"x",}"#,
            r#"["a","b","c","d"] x"#,
            r#"["a","b","c","d"]  "#,
            r#"["a","b","c","\ud800"]"#,
            r#"["a","b","c","\ud83d\ude00"]"#,
            r#"["a","b","c","d",1e400]"#,
            r#"["a","b","c","d",18446744073709551616]"#,
            r#"{"event":"e","x":{"y":[{"z":"\u00e9"}]}}"#,
            r#"{1:"event"}"#,
            r#""event""#,
            r#"42"#,
            r#"null"#,
            "",
            "not json",
            &shallow,
            &deep,
        ];
        for text in cases {
            assert_eq!(text_event(text), by_value(text), "{text}");
        }
    }

    #[test]
    fn shared_browser_configs_equal_configs_built_alone() {
        use crate::scenario::ClientSpec;
        let spec = |name: &str, node: &str, topic: &str, meta: Json, vsn: &str| ClientSpec {
            name: name.into(),
            node: node.into(),
            user: (name == "u").then(|| "someone".into()),
            topic: topic.into(),
            meta: Arc::new(meta),
            vsn: vsn.into(),
        };
        let (web, app) = (
            json!({"device": "web"}),
            json!({"device": "app", "n": [1, 2]}),
        );
        // metas that come back after another, equal metas written apart, an empty one
        let specs = [
            spec("a", "n0", "room:pop-0", web.clone(), "2.0.0"),
            spec("b", "n1", "room:pop-1", web.clone(), "2.0.0"),
            spec("c", "n0", "room:pop-0", app.clone(), "1.0.0"),
            spec("d", "n1", "room:pop-0", web.clone(), "2.0.0"),
            spec("u", "n2", "room:lobby", json!({}), "2.0.0"),
            spec("e", "n0", "room:pop-1", json!({"device": "web"}), "2.0.0"),
            spec("f", "n0", "room:pop-1", json!({"device": "web"}), "2.0.0"),
        ];
        let mut configs = BrowserConfigs::default();
        let shared: Vec<ClientConfig> = specs.iter().map(|s| configs.config(s, 9)).collect();
        for (spec, cfg) in specs.iter().zip(&shared) {
            let alone = BrowserConfigs::config_alone(spec, 9);
            // every field, the shared ones by value
            assert_eq!(format!("{cfg:?}"), format!("{alone:?}"), "{}", spec.name);
        }
        // and they are shared: by node, by topic, by a run of equal metas
        assert!(Arc::ptr_eq(&shared[0].url, &shared[2].url));
        assert!(Arc::ptr_eq(&shared[1].url, &shared[3].url));
        assert!(Arc::ptr_eq(&shared[0].topic, &shared[3].topic));
        assert!(Arc::ptr_eq(
            &shared[0].join_payload,
            &shared[1].join_payload
        ));
        assert!(Arc::ptr_eq(
            &shared[5].join_payload,
            &shared[6].join_payload
        ));
        assert!(Arc::ptr_eq(
            &shared[0].reconnect_after,
            &shared[6].reconnect_after
        ));
    }

    #[test]
    fn browsers_spread_over_hosts_while_links_stay_few() {
        // (clients, nodes) → browsers per host
        let cases = [
            (0, 3, 1),
            (1, 3, 1),
            (256, 3, 256),
            // past 256 at 3 nodes: up to ten hosts (30 links)
            (257, 3, 129),
            (3_000, 3, 300),
            (30_000, 3, 3_000),
            // 16 nodes: two hosts for speed, then as many as ports need
            (16_000, 16, 8_000),
            (48_000, 16, 16_000),
            (160_000, 16, 16_000),
            (200_000, 16, 15_385),
            // 17 nodes and more: one host up to the ports' limit
            (16_384, 17, 16_384),
            (16_385, 17, 8_193),
        ];
        for (clients, nodes, want) in cases {
            let per = clients_per_host(clients, nodes);
            assert_eq!(per, want, "{clients} clients at {nodes} nodes");
            assert!(per <= CLIENTS_PER_HOST);
            assert!(
                clients.div_ceil(per) * nodes
                    <= BROWSER_LINKS_MAX.max(nodes * clients.div_ceil(CLIENTS_PER_HOST))
            );
        }
    }
}
