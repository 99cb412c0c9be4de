//! A scenario's node-level timeline as commands for a real cluster: which node does what at
//! which millisecond. Pure: the cluster runner sends the commands, the comparison reads the
//! same plan.
//!
//! What maps: client joins, leaves and updates (a track, untrack or update by an owner process
//! on the client's node), disconnects, joins cut mid-exchange and channel crashes (the owner
//! process is killed, so the shard's link removes its presences), reconnects, partitions, two-way cuts, repairs and heals
//! (distributed Erlang connections dropped and made again), one-way cuts (see
//! [`Cmd::Block`]), node crashes and restarts, and graceful permdowns. What does not map is
//! refused with a reason ([`unmappable`]): holds, segment loss and per-link latency (loopback
//! has none of these), and the `corrected` and `eager` profiles (Phoenix has neither).

use phxsim_sim::Scenario;
use phxsim_sim::scenario::{Action, ProfileName};
use std::collections::{BTreeMap, BTreeSet};

/// One command for one node of the real cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cmd {
    /// Open the distributed Erlang connection to the peer.
    Connect(String),
    /// Drop the connection to the peer (both directions, at once).
    Disconnect(String),
    /// A one-way cut from this node to the peer: this node's PubSub messages to the peer are
    /// dropped at the sender. Distributed Erlang carries both directions on one connection,
    /// so a cut of one direction cannot be made on the connection itself.
    Block(String),
    Unblock(String),
    /// Start the tracker: a new replica (new vsn).
    Start,
    /// Drop every connection, kill the tracker and every owner process at once.
    Crash,
    /// `Phoenix.Tracker.graceful_permdown`, then drop every connection.
    Permdown,
    Track {
        client: String,
        topic: String,
        key: String,
        meta: String,
    },
    Untrack {
        client: String,
    },
    Update {
        client: String,
        meta: String,
    },
    /// The owner process is killed: the shard's link makes its presences leave.
    Drop {
        client: String,
    },
}

/// A command at its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed {
    pub at_ms: u64,
    pub node: String,
    pub cmd: Cmd,
}

/// Why a client's presence is tracked again without a step of the timeline saying so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejoinCause {
    /// phoenix.js rejoins a crashed channel after its rejoin backoff.
    ChannelCrash,
    /// The client's node restarted; phoenix.js reconnects with backoff and rejoins.
    NodeRestart,
}

/// A rejoin whose time only the client's behaviour decides: the plan asks for its time
/// ([`RejoinTimes`]) and the cluster runner tracks the presence then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejoin {
    pub after_ms: u64,
    pub client: String,
    pub node: String,
    pub cause: RejoinCause,
}

/// When each automatic rejoin happens; in `crosscheck` it is the median time at which the
/// simulated seeds saw it, since phoenix.js's reconnect and rejoin timers, not the tracker,
/// decide it.
pub trait RejoinTimes {
    fn rejoin_at(&self, rejoin: &Rejoin) -> Option<u64>;
}

/// The whole run of a real cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub nodes: Vec<String>,
    /// Commands in time order (ties keep the scenario's order).
    pub steps: Vec<Timed>,
    /// Automatic rejoins, each with the time it was placed at (or `None` when no seed showed
    /// it, in which case it is left out of the run).
    pub rejoins: Vec<(Rejoin, Option<u64>)>,
    /// Whether any node needs the one-way filter (then every node runs the filtered adapter).
    pub needs_filter: bool,
    pub duration_ms: u64,
}

/// What in a scenario cannot be run on a real cluster, one reason per line; empty if it maps.
pub fn unmappable(s: &Scenario) -> Vec<String> {
    let mut why = Vec::new();
    if s.tracker.profile != ProfileName::Faithful {
        why.push(format!(
            "tracker.profile \"{}\": only the faithful profile is Phoenix",
            s.tracker.profile
        ));
    }
    if s.network.loss > 0.0 || s.network.client_loss > 0.0 {
        why.push("network.loss/client_loss: loopback loses no segments".into());
    }
    if !s.network.links.is_empty() {
        why.push("network.links: loopback has no per-link latency".into());
    }
    if s.network.latency_ms[1] > 10 {
        why.push(format!(
            "network.latency_ms {:?}: loopback latency is below 1 ms",
            s.network.latency_ms
        ));
    }
    for step in &s.timeline {
        match &step.action {
            Action::Hold(_) | Action::Release(_) => why.push(format!(
                "at {} ms {}: a held link has no counterpart in distributed Erlang",
                step.at_ms,
                step.action.label()
            )),
            Action::Loss(r) | Action::ClientLoss(r) if *r > 0.0 => why.push(format!(
                "at {} ms {}: loopback loses no segments",
                step.at_ms,
                step.action.label()
            )),
            _ => {}
        }
    }
    for n in &s.nodes {
        if !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            why.push(format!(
                "node {n:?}: an Erlang node name takes letters, digits, '_' and '-'"
            ));
        }
    }
    why
}

/// The meta the simulated server tracks for a join with the client's meta: the reference
/// channel's `{"status": "online"}` merged with it.
fn join_meta(meta: &serde_json::Value) -> String {
    let payload = phxsim_wire::Payload::Json(serde_json::json!({ "meta": meta }));
    let tracked = phxsim_runtime::server::room::join_meta(&payload)
        .map(serde_json::Value::Object)
        .unwrap_or_else(|_| meta.clone());
    phxsim_sim::node_trace::canonical_meta(&tracked)
}

/// The time after which the simulator's links give up on a silent peer (its stand-in for
/// distributed Erlang's net_ticktime): a one-way cut becomes a lost connection after it.
pub fn link_idle_ms(bp: u64) -> u64 {
    phxsim_sim::harness::link_idle_ms(bp)
}

fn pair(x: &str, y: &str) -> (String, String) {
    if x <= y {
        (x.to_owned(), y.to_owned())
    } else {
        (y.to_owned(), x.to_owned())
    }
}

#[derive(Default)]
struct Net {
    alive: BTreeSet<String>,
    permdowned: BTreeSet<String>,
    cut: BTreeSet<(String, String)>,
    /// One-way cuts (from, to) with the time they began.
    oneway: BTreeMap<(String, String), u64>,
    /// Pairs whose connection the simulator's idle timeout has dropped under a one-way cut.
    oneway_dead: BTreeSet<(String, String)>,
    connected: BTreeSet<(String, String)>,
}

impl Net {
    fn wants(&self, p: &(String, String)) -> bool {
        self.alive.contains(&p.0)
            && self.alive.contains(&p.1)
            && !self.cut.contains(p)
            && !self.oneway_dead.contains(p)
    }
}

#[derive(Clone)]
struct ClientState {
    node: String,
    topic: String,
    key: String,
    meta: String,
    /// The user wants the channel joined (joined, or rejoining).
    wants: bool,
    /// An owner process tracks the presence now.
    tracked: bool,
    /// Disconnected by the timeline: away until `reconnect`.
    away: bool,
}

/// Builds the plan; `times` places the automatic rejoins.
pub fn plan(s: &Scenario, times: &dyn RejoinTimes) -> Plan {
    let idle = link_idle_ms(s.tracker.broadcast_period_ms);
    let mut net = Net {
        alive: s.nodes.iter().cloned().collect(),
        ..Net::default()
    };
    let mut clients: BTreeMap<String, ClientState> = s
        .clients
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                ClientState {
                    node: c.node.clone(),
                    topic: c.topic.clone(),
                    key: c.user().to_owned(),
                    meta: join_meta(&c.meta),
                    wants: false,
                    tracked: false,
                    away: false,
                },
            )
        })
        .collect();
    let mut steps = Vec::new();
    let mut rejoins = Vec::new();
    let mut needs_filter = false;

    // Events in time order: the timeline, the idle timeouts of one-way cuts and the rejoins,
    // which are only known once the steps before them are.
    enum Ev<'a> {
        Step(&'a Action),
        OnewayIdle(String, String, u64),
        Rejoin(String),
    }
    let mut queue: Vec<(u64, usize, Ev)> = s
        .timeline
        .iter()
        .enumerate()
        .map(|(i, st)| (st.at_ms, i, Ev::Step(&st.action)))
        .collect();
    let mut seq = queue.len();
    let sync = |at: u64, net: &mut Net, steps: &mut Vec<Timed>| {
        for (i, x) in s.nodes.iter().enumerate() {
            for y in &s.nodes[i + 1..] {
                let p = pair(x, y);
                let want = net.wants(&p);
                let have = net.connected.contains(&p);
                if want && !have {
                    steps.push(Timed {
                        at_ms: at,
                        node: p.1.clone(),
                        cmd: Cmd::Connect(p.0.clone()),
                    });
                    net.connected.insert(p);
                } else if !want && have {
                    // a dead node's connections went with it
                    if net.alive.contains(&p.0) && net.alive.contains(&p.1) {
                        steps.push(Timed {
                            at_ms: at,
                            node: p.0.clone(),
                            cmd: Cmd::Disconnect(p.1.clone()),
                        });
                    }
                    net.connected.remove(&p);
                }
            }
        }
    };
    // cuts at time 0 hold from the start, as the simulator applies them before its first step
    for st in s.timeline.iter().filter(|st| st.at_ms == 0) {
        match &st.action {
            Action::Cut(links) => net.cut.extend(links.iter().map(|(x, y)| pair(x, y))),
            Action::Partition(groups) => {
                for (i, g) in groups.iter().enumerate() {
                    for other in &groups[i + 1..] {
                        net.cut
                            .extend(g.iter().flat_map(|x| other.iter().map(|y| pair(x, y))));
                    }
                }
            }
            _ => {}
        }
    }
    sync(0, &mut net, &mut steps);
    for n in &s.nodes {
        steps.push(Timed {
            at_ms: 0,
            node: n.clone(),
            cmd: Cmd::Start,
        });
    }

    while !queue.is_empty() {
        queue.sort_by_key(|(at, i, _)| (*at, *i));
        let (at, _, ev) = queue.remove(0);
        let track = |c: &mut ClientState, name: &str, steps: &mut Vec<Timed>| {
            steps.push(Timed {
                at_ms: at,
                node: c.node.clone(),
                cmd: Cmd::Track {
                    client: name.to_owned(),
                    topic: c.topic.clone(),
                    key: c.key.clone(),
                    meta: c.meta.clone(),
                },
            });
            c.tracked = true;
        };
        match ev {
            Ev::OnewayIdle(x, y, since) => {
                if net.oneway.get(&(x.clone(), y.clone())) == Some(&since) {
                    net.oneway_dead.insert(pair(&x, &y));
                    sync(at, &mut net, &mut steps);
                }
            }
            Ev::Rejoin(name) => {
                let c = clients.get_mut(&name).expect("client of the scenario");
                if c.wants && !c.tracked && !c.away && net.alive.contains(&c.node) {
                    track(c, &name, &mut steps);
                }
            }
            Ev::Step(action) => match action {
                Action::Join(name) => {
                    let c = clients.get_mut(name).expect("validated client");
                    c.wants = true;
                    if !c.tracked && !c.away && net.alive.contains(&c.node) {
                        track(c, name, &mut steps);
                    }
                }
                Action::Leave(name) => {
                    let c = clients.get_mut(name).expect("validated client");
                    c.wants = false;
                    if c.tracked {
                        steps.push(Timed {
                            at_ms: at,
                            node: c.node.clone(),
                            cmd: Cmd::Untrack {
                                client: name.clone(),
                            },
                        });
                        c.tracked = false;
                    }
                }
                Action::Update(name, meta) => {
                    let c = clients.get_mut(name).expect("validated client");
                    if c.tracked {
                        steps.push(Timed {
                            at_ms: at,
                            node: c.node.clone(),
                            cmd: Cmd::Update {
                                client: name.clone(),
                                meta: phxsim_sim::node_trace::canonical_meta(meta),
                            },
                        });
                    }
                }
                Action::Disconnect(name)
                | Action::DropMidJoin(name)
                | Action::CrashChannel(name) => {
                    let c = clients.get_mut(name).expect("validated client");
                    // a join cut midway: a correct server untracks whatever it tracked, so on
                    // the nodes the client wants its presence and is away until it reconnects
                    if matches!(action, Action::DropMidJoin(_)) {
                        c.wants = true;
                    }
                    if c.tracked {
                        steps.push(Timed {
                            at_ms: at,
                            node: c.node.clone(),
                            cmd: Cmd::Drop {
                                client: name.clone(),
                            },
                        });
                        c.tracked = false;
                    }
                    if matches!(action, Action::Disconnect(_) | Action::DropMidJoin(_)) {
                        c.away = true;
                    } else if c.wants && !c.away {
                        let r = Rejoin {
                            after_ms: at,
                            client: name.clone(),
                            node: c.node.clone(),
                            cause: RejoinCause::ChannelCrash,
                        };
                        let when = times.rejoin_at(&r);
                        if let Some(w) = when {
                            queue.push((w.max(at), seq, Ev::Rejoin(name.clone())));
                            seq += 1;
                        }
                        rejoins.push((r, when));
                    }
                }
                Action::Reconnect(name) => {
                    let c = clients.get_mut(name).expect("validated client");
                    c.away = false;
                    if c.wants && !c.tracked && net.alive.contains(&c.node) {
                        track(c, name, &mut steps);
                    }
                }
                Action::Partition(groups) => {
                    for (i, g) in groups.iter().enumerate() {
                        for other in &groups[i + 1..] {
                            for x in g {
                                for y in other {
                                    net.cut.insert(pair(x, y));
                                }
                            }
                        }
                    }
                    sync(at, &mut net, &mut steps);
                }
                Action::Cut(links) => {
                    for (x, y) in links {
                        net.cut.insert(pair(x, y));
                    }
                    sync(at, &mut net, &mut steps);
                }
                Action::CutOneway(links) => {
                    for (x, y) in links {
                        needs_filter = true;
                        if net.oneway.contains_key(&(x.clone(), y.clone())) {
                            continue;
                        }
                        net.oneway.insert((x.clone(), y.clone()), at);
                        steps.push(Timed {
                            at_ms: at,
                            node: x.clone(),
                            cmd: Cmd::Block(y.clone()),
                        });
                        queue.push((at + idle, seq, Ev::OnewayIdle(x.clone(), y.clone(), at)));
                        seq += 1;
                    }
                }
                Action::Heal => {
                    net.cut.clear();
                    net.oneway_dead.clear();
                    for ((x, y), _) in std::mem::take(&mut net.oneway) {
                        steps.push(Timed {
                            at_ms: at,
                            node: x,
                            cmd: Cmd::Unblock(y),
                        });
                    }
                    sync(at, &mut net, &mut steps);
                }
                Action::Repair(links) => {
                    for (x, y) in links {
                        net.cut.remove(&pair(x, y));
                    }
                    sync(at, &mut net, &mut steps);
                }
                Action::Crash(n) => {
                    if net.alive.remove(n) {
                        steps.push(Timed {
                            at_ms: at,
                            node: n.clone(),
                            cmd: Cmd::Crash,
                        });
                        for c in clients.values_mut().filter(|c| &c.node == n) {
                            c.tracked = false;
                        }
                        sync(at, &mut net, &mut steps);
                    }
                }
                Action::Restart(n) => {
                    if !net.alive.contains(n) && !net.permdowned.contains(n) {
                        net.alive.insert(n.clone());
                        sync(at, &mut net, &mut steps);
                        steps.push(Timed {
                            at_ms: at,
                            node: n.clone(),
                            cmd: Cmd::Start,
                        });
                        for (name, c) in clients.iter().filter(|(_, c)| &c.node == n) {
                            if c.wants && !c.away {
                                let r = Rejoin {
                                    after_ms: at,
                                    client: name.clone(),
                                    node: n.clone(),
                                    cause: RejoinCause::NodeRestart,
                                };
                                let when = times.rejoin_at(&r);
                                if let Some(w) = when {
                                    queue.push((w.max(at), seq, Ev::Rejoin(name.clone())));
                                    seq += 1;
                                }
                                rejoins.push((r, when));
                            }
                        }
                    }
                }
                Action::Permdown(n) => {
                    if net.alive.remove(n) {
                        net.permdowned.insert(n.clone());
                        steps.push(Timed {
                            at_ms: at,
                            node: n.clone(),
                            cmd: Cmd::Permdown,
                        });
                        for c in clients.values_mut().filter(|c| &c.node == n) {
                            c.tracked = false;
                            c.wants = false;
                        }
                        sync(at, &mut net, &mut steps);
                    }
                }
                // refused by `unmappable` (or a no-op: loss set to 0)
                Action::Hold(_) | Action::Release(_) | Action::Loss(_) | Action::ClientLoss(_) => {}
            },
        }
    }
    steps.sort_by_key(|t| t.at_ms);
    Plan {
        nodes: s.nodes.clone(),
        steps,
        rejoins,
        needs_filter,
        duration_ms: s.duration_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;
    impl RejoinTimes for Never {
        fn rejoin_at(&self, _: &Rejoin) -> Option<u64> {
            None
        }
    }
    struct After(u64);
    impl RejoinTimes for After {
        fn rejoin_at(&self, r: &Rejoin) -> Option<u64> {
            Some(r.after_ms + self.0)
        }
    }

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            r#"title = "t"
nodes = ["a", "b", "c"]
duration_ms = 10000
[tracker]
broadcast_period_ms = 100
down_period_ms = 2000
permdown_period_ms = 5000
[[clients]]
name = "alice"
node = "a"
[[clients]]
name = "bob"
node = "b"
{extra}"#
        );
        Scenario::parse("t.toml", &text).expect("valid scenario")
    }

    fn at(p: &Plan, ms: u64) -> Vec<(String, Cmd)> {
        p.steps
            .iter()
            .filter(|t| t.at_ms == ms)
            .map(|t| (t.node.clone(), t.cmd.clone()))
            .collect()
    }

    #[test]
    fn the_mesh_connects_before_every_tracker_starts() {
        let p = plan(&scenario(""), &Never);
        let start = at(&p, 0);
        assert_eq!(
            start,
            vec![
                ("b".into(), Cmd::Connect("a".into())),
                ("c".into(), Cmd::Connect("a".into())),
                ("c".into(), Cmd::Connect("b".into())),
                ("a".into(), Cmd::Start),
                ("b".into(), Cmd::Start),
                ("c".into(), Cmd::Start),
            ]
        );
    }

    #[test]
    fn a_join_cut_midway_leaves_the_client_away_and_its_reconnect_tracks_it() {
        let p = plan(
            &scenario(
                "[[timeline]]\nat_ms = 100\njoin = \"alice\"\n[[timeline]]\nat_ms = 200\ndrop_mid_join = \"alice\"\n[[timeline]]\nat_ms = 300\nreconnect = \"alice\"\n",
            ),
            &Never,
        );
        let alice = |cmd: &Cmd| match cmd {
            Cmd::Track { client, .. } | Cmd::Drop { client } => client == "alice",
            _ => false,
        };
        assert!(matches!(&at(&p, 100)[..], [(n, c @ Cmd::Track { .. })] if n == "a" && alice(c)));
        assert!(matches!(&at(&p, 200)[..], [(n, c @ Cmd::Drop { .. })] if n == "a" && alice(c)));
        assert!(matches!(&at(&p, 300)[..], [(n, c @ Cmd::Track { .. })] if n == "a" && alice(c)));
        // never joined before: the cut join tracked nothing, and the reconnect tracks
        let p = plan(
            &scenario(
                "[[timeline]]\nat_ms = 200\ndrop_mid_join = \"alice\"\n[[timeline]]\nat_ms = 300\nreconnect = \"alice\"\n",
            ),
            &Never,
        );
        assert!(at(&p, 200).is_empty());
        assert!(matches!(&at(&p, 300)[..], [(n, c @ Cmd::Track { .. })] if n == "a" && alice(c)));
    }

    #[test]
    fn a_partition_disconnects_across_groups_and_a_heal_reconnects() {
        let p = plan(
            &scenario(
                "[[timeline]]\nat_ms = 100\npartition = [[\"a\", \"b\"], [\"c\"]]\n[[timeline]]\nat_ms = 200\nheal = true\n",
            ),
            &Never,
        );
        assert_eq!(
            at(&p, 100),
            vec![
                ("a".into(), Cmd::Disconnect("c".into())),
                ("b".into(), Cmd::Disconnect("c".into())),
            ]
        );
        assert_eq!(
            at(&p, 200),
            vec![
                ("c".into(), Cmd::Connect("a".into())),
                ("c".into(), Cmd::Connect("b".into())),
            ]
        );
    }

    #[test]
    fn a_one_way_cut_blocks_then_loses_the_connection_after_the_idle_timeout() {
        let p = plan(
            &scenario(
                "[[timeline]]\nat_ms = 100\ncut_oneway = [[\"a\", \"c\"]]\n[[timeline]]\nat_ms = 5000\nheal = true\n",
            ),
            &Never,
        );
        assert!(p.needs_filter);
        assert_eq!(at(&p, 100), vec![("a".into(), Cmd::Block("c".into()))]);
        assert_eq!(
            at(&p, 100 + link_idle_ms(100)),
            vec![("a".into(), Cmd::Disconnect("c".into()))]
        );
        assert_eq!(
            at(&p, 5000),
            vec![
                ("a".into(), Cmd::Unblock("c".into())),
                ("c".into(), Cmd::Connect("a".into())),
            ]
        );
    }

    #[test]
    fn a_restart_reconnects_starts_a_new_replica_and_rejoins_its_clients() {
        let p = plan(
            &scenario(
                "[[timeline]]\nat_ms = 100\njoin = \"bob\"\n[[timeline]]\nat_ms = 1000\ncrash = \"b\"\n[[timeline]]\nat_ms = 1500\nrestart = \"b\"\n",
            ),
            &After(40),
        );
        assert_eq!(at(&p, 1000), vec![("b".into(), Cmd::Crash)]);
        assert_eq!(
            at(&p, 1500),
            vec![
                ("b".into(), Cmd::Connect("a".into())),
                ("c".into(), Cmd::Connect("b".into())),
                ("b".into(), Cmd::Start),
            ]
        );
        assert!(
            matches!(&at(&p, 1540)[..], [(n, Cmd::Track { client, .. })] if n == "b" && client == "bob")
        );
        assert_eq!(p.rejoins.len(), 1);
    }

    #[test]
    fn a_cut_at_time_zero_holds_before_the_trackers_start() {
        let p = plan(
            &scenario("[[timeline]]\nat_ms = 0\ncut = [[\"a\", \"c\"], [\"b\", \"c\"]]\n"),
            &Never,
        );
        let connects: Vec<_> = at(&p, 0)
            .into_iter()
            .filter(|(_, c)| matches!(c, Cmd::Connect(_) | Cmd::Disconnect(_)))
            .collect();
        assert_eq!(connects, vec![("b".into(), Cmd::Connect("a".into()))]);
    }

    #[test]
    fn holds_loss_and_other_profiles_do_not_map() {
        let s = scenario(
            "[[timeline]]\nat_ms = 100\nhold = [[\"a\", \"b\"]]\n[[timeline]]\nat_ms = 200\nloss = 0.1\n",
        );
        let why = unmappable(&s);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(unmappable(&scenario("")).is_empty());
    }
}
