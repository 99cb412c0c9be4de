//! The orderings Phoenix allows: which frames of an exchange may come in another order, and
//! which extra frames may come at all, each with the race that explains it.
//!
//! Phoenix 1.7.21 does not fix every interleaving (`phoenix-races.md`): replies and pushes come
//! from the channel process, presence diffs from the Presence process after an async task, and
//! the PubSub registry forgets a dead channel's subscription only when it sees the process go
//! down. A recording shows one interleaving; a case expects the *set* Phoenix can produce:
//!
//! - [`Race::OwnJoin`]: a joiner's own join `presence_diff` and its `presence_state`, adjacent,
//!   in either order (reference-channel.md).
//! - [`Race::U`]: after `update_meta`, the updater's `phx_reply` and its own `presence_diff`,
//!   adjacent, in either order.
//! - [`Race::D`]: after a duplicate join, the joiner *may also receive* the `presence_diff` that
//!   carries only the leave of its replaced meta, anywhere after the reply to the new join (the
//!   new channel subscribes before it replies; the real server sent it before the old
//!   channel's `phx_close` too, and between `presence_state` and the join diff), also late in
//!   a later exchange; like every diff of that exchange it may come twice while the old
//!   channel's subscription lingers (the real server once sent it twice in a row).
//! - [`Race::Topics`]: one connection's diffs of different topics, adjacent, in any order
//!   (every channel is its own process; a socket joined to two topics leaves both at once).
//! - [`Race::L`]: after a leave (`phx_reply` + `phx_close`) or a crash (`phx_error`), the socket
//!   *may also receive* the `presence_diff` carrying its own leave: anywhere after the reply
//!   (a leave) or from the `phx_error`'s place on (a crash), also before the closing frame,
//!   since the socket and the tracker see the channel's exit independently, and also late.
//!
//! Everything else is exact: the frames themselves (contents, key order, refs, join_refs) and
//! every other order. The rules are derived from the script's frames, so they apply to every
//! case alike; [`Plan::describe`] says in words what a case allows.

use crate::cases::CaseScript;
use crate::script::{Action, Observed};
use crate::transcript::{NormItem, RefNamer, Transcript, norm_item};
use phxsim_wire::message::{
    PHX_CLOSE, PHX_ERROR, PHX_JOIN, PHX_LEAVE, PHX_REPLY, PRESENCE_DIFF, PRESENCE_STATE,
};
use phxsim_wire::{Codec, Frame, Serializer};
use serde_json::Value as Json;

/// Why Phoenix may vary an order or add a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Race {
    /// The joiner's own join diff and its `presence_state`.
    OwnJoin,
    /// `update_meta`: the updater's reply and its own diff.
    U,
    /// Duplicate join: the replaced presence's leave diff reaches the new channel.
    D,
    /// Leave or crash: the socket's own leave diff still reaches it.
    L,
    /// Diffs of different topics: each topic has its own channel processes and its own
    /// broadcasts, so one event that touches two topics (a socket joined to both closes)
    /// reaches a watcher of both in either order.
    Topics,
}

impl Race {
    /// Where the race is described, and what it is, in one phrase.
    pub fn cite(self) -> &'static str {
        match self {
            Race::OwnJoin => {
                "reference-channel.md: the joiner's own presence_diff goes through the tracker \
                 and PubSub, its presence_state is a direct push"
            }
            Race::U => {
                "phoenix-races.md race U: the diff is broadcast by the Presence process after \
                 an async task, the reply comes from the channel"
            }
            Race::D => {
                "phoenix-races.md race D: the replaced presence's leave diff is broadcast \
                 after the new channel subscribed"
            }
            Race::L => {
                "phoenix-races.md race L: the PubSub registry drops a dead channel's \
                 subscription only when it sees the process exit"
            }
            Race::Topics => {
                "phoenix-races.md: every channel is its own process and every diff a \
                 broadcast of the Presence process after an async task; nothing orders \
                 two topics' diffs"
            }
        }
    }

    /// `race U`, ...
    pub fn label(self) -> &'static str {
        match self {
            Race::OwnJoin => "join order",
            Race::U => "race U",
            Race::D => "race D",
            Race::L => "race L",
            Race::Topics => "topics",
        }
    }
}

/// A frame a connection may receive or not, from a point on until the end of the case.
#[derive(Clone, Debug, PartialEq)]
pub struct Float {
    /// The frame.
    pub frame: Observed,
    /// Its match key ([`match_key`]).
    pub key: String,
    /// How many of the connection's required items of the anchoring exchange must have come
    /// first.
    pub after: usize,
    /// Why.
    pub race: Race,
}

/// What one connection must see in one exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnPlan {
    /// The connection.
    pub conn: String,
    /// Required observations, in the recording's order.
    pub items: Vec<Observed>,
    /// Their match keys ([`match_key`]).
    pub keys: Vec<String>,
    /// Ranges `[start, end)` of `items` whose members may come in any order among themselves.
    pub groups: Vec<(usize, usize, Race)>,
    /// Optional frames from this exchange on.
    pub floats: Vec<Float>,
    /// Races D and L, the lingering subscription: while the registry still holds the ended
    /// channel's subscription, each broadcast on the topic reaches the socket through it as
    /// well, so every required `presence_diff` here may come a second time (seen on the real
    /// server: a duplicate join's own join diff twice). `Some` names the race.
    pub repeats: Option<Race>,
}

/// One exchange's expectations, connections in the case's order.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangePlan {
    /// Per connection.
    pub conns: Vec<ConnPlan>,
}

impl ExchangePlan {
    /// The plan of one connection, if it must or may see anything here.
    pub fn conn(&self, conn: &str) -> Option<&ConnPlan> {
        self.conns.iter().find(|c| c.conn == conn)
    }
}

/// A case's allowed orderings.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Per exchange.
    pub exchanges: Vec<ExchangePlan>,
}

/// `(event, payload)` of a JSON text frame.
pub(crate) fn event_payload(codec: &Codec, obs: &Observed) -> Option<(String, Json)> {
    let Observed::Frame(frame @ Frame::Text(_)) = obs else {
        return None;
    };
    let msg = codec.decode(frame).ok()?;
    let payload = msg.payload.as_json()?.clone();
    Some((msg.event, payload))
}

fn is_event(codec: &Codec, obs: &Observed, event: &str) -> bool {
    event_payload(codec, obs).is_some_and(|(e, _)| e == event)
}

/// A diff that joins nothing and leaves only `user`'s metas.
fn is_leave_of(codec: &Codec, obs: &Observed, user: &str) -> bool {
    let Some((event, p)) = event_payload(codec, obs) else {
        return false;
    };
    let joins_empty = p
        .get("joins")
        .and_then(Json::as_object)
        .is_some_and(|j| j.is_empty());
    let leaves_only_user = p
        .get("leaves")
        .and_then(Json::as_object)
        .is_some_and(|l| l.len() == 1 && l.contains_key(user));
    event == PRESENCE_DIFF && joins_empty && leaves_only_user
}

/// Whether a diff/state pair is "the joiner's own diff and its state": the diff only joins
/// keys the state holds, and leaves nothing.
fn own_pair(codec: &Codec, a: &Observed, b: &Observed) -> bool {
    let (Some((ea, pa)), Some((eb, pb))) = (event_payload(codec, a), event_payload(codec, b))
    else {
        return false;
    };
    let (diff, state) = match (ea.as_str(), eb.as_str()) {
        (PRESENCE_DIFF, PRESENCE_STATE) => (pa, pb),
        (PRESENCE_STATE, PRESENCE_DIFF) => (pb, pa),
        _ => return false,
    };
    let (Some(joins), Some(state)) = (
        diff.get("joins").and_then(Json::as_object),
        state.as_object(),
    ) else {
        return false;
    };
    let no_leaves = diff
        .get("leaves")
        .and_then(Json::as_object)
        .is_none_or(|l| l.is_empty());
    !joins.is_empty() && no_leaves && joins.keys().all(|k| state.contains_key(k))
}

/// The `user_id` and serializer of each connection, from its connect query.
fn conn_identity(script: &CaseScript, conn: &str) -> (Option<String>, Serializer) {
    for ex in &script.exchanges {
        if let Action::Connect { conn: c, query, .. } = &ex.action
            && c == conn
        {
            let mut user = None;
            let mut vsn = script.vsn;
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("user_id", u)) => user = Some(u.to_owned()),
                    Some(("vsn", v)) => vsn = Serializer::from_vsn(Some(v)).unwrap_or(vsn),
                    _ => {}
                }
            }
            return (user, vsn);
        }
    }
    (None, script.vsn)
}

/// The event and topic of a frame the client sends.
fn sent_event(vsn: Serializer, action: &Action) -> Option<(String, String)> {
    let Action::Send { frame, .. } = action else {
        return None;
    };
    Codec::server(vsn)
        .with_numeric_refs(true)
        .decode(frame)
        .ok()
        .map(|m| (m.event, m.topic))
}

/// The single meta a diff joins under `user`.
fn joined_meta(codec: &Codec, obs: &Observed, user: &str) -> Option<Json> {
    let (event, p) = event_payload(codec, obs)?;
    if event != PRESENCE_DIFF {
        return None;
    }
    let metas = p.get("joins")?.get(user)?.get("metas")?.as_array()?;
    match metas.as_slice() {
        [meta] => Some(meta.clone()),
        _ => None,
    }
}

/// The diff Phoenix broadcasts when `meta` of `user` leaves `topic`, in Phoenix's key order.
fn leave_diff(vsn: Serializer, topic: &str, user: &str, meta: &Json) -> Option<Observed> {
    let payload = serde_json::json!({
        "joins": {},
        "leaves": { user: { "metas": [meta] } },
    });
    let msg = phxsim_wire::Message::broadcast(topic, PRESENCE_DIFF, payload);
    Codec::server(vsn).encode(&msg).ok().map(Observed::Frame)
}

/// What makes two observations stand for each other: the normalized item (refs named by
/// first appearance, so a ref that names another meta does not match), except that close
/// frames match whatever their code (the strict comparison decides about codes).
pub fn match_key(obs: &Observed, namer: &mut RefNamer) -> String {
    match norm_item(obs, namer) {
        NormItem::Closed { .. } => "closed".to_owned(),
        other => other.render(),
    }
}

/// Item `k` of a plan as reports show it: its match key (refs numbered as in the expected
/// transcript), or the close frame itself.
fn shown(cp: &ConnPlan, k: usize) -> String {
    match (cp.keys.get(k), cp.items.get(k)) {
        (Some(key), Some(Observed::Closed { code, .. })) if key == "closed" => match code {
            Some(c) => format!("close {c}"),
            None => "close (no code)".to_owned(),
        },
        (Some(key), _) => key.clone(),
        _ => String::new(),
    }
}

/// Whether an observation is a presence_diff text frame (either serializer).
fn is_diff_frame(obs: &Observed) -> bool {
    [Serializer::V1, Serializer::V2].iter().any(|v| {
        is_event(
            &Codec::client(*v).with_numeric_refs(true),
            obs,
            PRESENCE_DIFF,
        )
    })
}

/// The topic of a presence_diff frame.
fn diff_topic(codec: &Codec, obs: &Observed) -> Option<String> {
    let Observed::Frame(frame @ Frame::Text(_)) = obs else {
        return None;
    };
    let msg = codec.decode(frame).ok()?;
    (msg.event == PRESENCE_DIFF).then_some(msg.topic)
}

/// Derives a case's plan from its script.
pub fn plan(script: &CaseScript) -> Plan {
    let expected = Transcript::expected(script);
    let mut namer = RefNamer::default();
    let mut exchanges = Vec::new();
    // Each connection's own current meta per topic, from the diffs of its joins and updates:
    // what its leave diff will carry when no one else in the case saw that diff.
    let mut own_meta: std::collections::BTreeMap<(String, String), Json> = Default::default();
    // Connections whose channel ended in the previous exchange (their subscription may linger).
    let mut lingering: Vec<(String, Race)> = Vec::new();
    for (ex, t) in script.exchanges.iter().zip(&expected.exchanges) {
        let actor = ex.action.conn();
        let (_, actor_vsn) = conn_identity(script, actor);
        let sent = sent_event(actor_vsn, &ex.action);
        let event = sent.as_ref().map(|(e, _)| e.clone());
        let sent_topic = sent.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
        let mut conns = Vec::new();
        let mut ended_here: Vec<(String, Race)> = Vec::new();
        for (conn, items) in &t.observed {
            let (user, vsn) = conn_identity(script, conn);
            // Numeric refs decode too (Phoenix 1.7.21 echoes them).
            let codec = Codec::client(vsn).with_numeric_refs(true);
            let mut items = items.clone();
            let mut keys: Vec<String> = items.iter().map(|o| match_key(o, &mut namer)).collect();
            let mut floats = Vec::new();
            // Races D and L: the acting connection's own leave diff is optional after the
            // frame that ends its channel.
            let ender = match event.as_deref() {
                Some(PHX_JOIN) => Some((PHX_CLOSE, Race::D)),
                Some(PHX_LEAVE) => Some((PHX_CLOSE, Race::L)),
                Some(_) => Some((PHX_ERROR, Race::L)),
                None => None,
            };
            if let (true, Some((end_event, race)), Some(user)) = (conn == actor, ender, &user) {
                let end_at = items.iter().position(|o| is_event(&codec, o, end_event));
                if let Some(end_at) = end_at {
                    ended_here.push((conn.clone(), race));
                    let own = items
                        .iter()
                        .position(|o| is_leave_of(&codec, o, user))
                        .map(|i| {
                            keys.remove(i);
                            items.remove(i)
                        });
                    let from_others = || {
                        t.observed
                            .iter()
                            .filter(|(c, _)| c != conn && conn_identity(script, c).1 == vsn)
                            .flat_map(|(_, o)| o)
                            .find(|o| is_leave_of(&codec, o, user))
                            .cloned()
                    };
                    let synthesized = || {
                        own_meta
                            .get(&(conn.clone(), sent_topic.clone()))
                            .and_then(|meta| leave_diff(vsn, &sent_topic, user, meta))
                    };
                    if let Some(frame) = own.or_else(from_others).or_else(synthesized) {
                        // The frame that ends the channel (phx_close, phx_error) is sent by
                        // the socket when it sees the channel process exit; the tracker sees
                        // the same exit and the leave diff follows through the Presence
                        // process and PubSub. Nothing orders the two, so the diff may come
                        // before that frame: after the reply when there is one (a leave; D:
                        // the new channel subscribed before replying), and for a crash,
                        // which gets no reply, anywhere from the phx_error's place on (the
                        // real server sent the own leave before phx_error in a CI run).
                        let after = items
                            .iter()
                            .take(end_at)
                            .position(|o| is_event(&codec, o, PHX_REPLY))
                            .map_or(end_at, |at| at + 1);
                        floats.push(Float {
                            key: match_key(&frame, &mut namer),
                            frame,
                            after,
                            race,
                        });
                    }
                }
            }
            // The actor's join or update: remember the meta its own diff carried.
            if conn == actor
                && let Some(user) = &user
                && matches!(event.as_deref(), Some(PHX_JOIN | "update_meta"))
                && let Some(meta) = items.iter().find_map(|o| joined_meta(&codec, o, user))
            {
                own_meta.insert((conn.clone(), sent_topic.clone()), meta);
            }
            let mut groups = Vec::new();
            let mut i = 0;
            while i + 1 < items.len() {
                let reply_and_diff = is_event(&codec, &items[i], PHX_REPLY)
                    && is_event(&codec, &items[i + 1], PRESENCE_DIFF);
                if own_pair(&codec, &items[i], &items[i + 1]) {
                    groups.push((i, i + 2, Race::OwnJoin));
                    i += 2;
                } else if conn == actor && event.as_deref() == Some("update_meta") && reply_and_diff
                {
                    groups.push((i, i + 2, Race::U));
                    i += 2;
                } else if let Some(first) = diff_topic(&codec, &items[i]) {
                    // A run of diffs of pairwise different topics: any order.
                    let mut topics = vec![first];
                    let mut end = i + 1;
                    while let Some(t) = items.get(end).and_then(|o| diff_topic(&codec, o)) {
                        if topics.contains(&t) {
                            break;
                        }
                        topics.push(t);
                        end += 1;
                    }
                    if end - i >= 2 {
                        groups.push((i, end, Race::Topics));
                        i = end;
                    } else {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
            let repeats = ended_here
                .iter()
                .chain(&lingering)
                .find(|(c, _)| c == conn)
                .map(|(_, r)| *r);
            conns.push(ConnPlan {
                conn: conn.clone(),
                items,
                keys,
                groups,
                floats,
                repeats,
            });
        }
        lingering = ended_here;
        exchanges.push(ExchangePlan { conns });
    }
    Plan { exchanges }
}

/// Frame text with `phx_ref`/`phx_ref_prev` values blanked, key order kept: what two frames
/// that may stand for each other have in common. Close frames match whatever their code (the
/// strict comparison decides about codes).
pub fn wild_key(obs: &Observed) -> String {
    match obs {
        Observed::Frame(Frame::Text(text)) => match serde_json::from_str::<Json>(text) {
            Ok(v) => format!("json {}", blank_refs(v)),
            Err(_) => format!("text {text}"),
        },
        Observed::Frame(Frame::Binary(b)) => {
            format!("binary {}", data_encoding::HEXLOWER.encode(b))
        }
        Observed::Closed { .. } => "closed".to_owned(),
        other => format!("{other:?}"),
    }
}

fn blank_refs(v: Json) -> Json {
    match v {
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| match v {
                    Json::String(_) if k == "phx_ref" || k == "phx_ref_prev" => {
                        (k, Json::String("<ref>".into()))
                    }
                    other => (k, blank_refs(other)),
                })
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.into_iter().map(blank_refs).collect()),
        other => other,
    }
}

/// What matched an actual observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The required item with this index (in the recording's order).
    Required(usize),
    /// An optional frame: (exchange it was anchored in, index among that exchange's floats).
    Float(usize, usize),
    /// A second copy of the required item with this index ([`ConnPlan::repeats`]).
    Repeat(usize),
    /// A second copy of an optional frame already matched ([`ConnPlan::repeats`]: the
    /// lingering subscription delivers the replaced presence's leave diff twice too).
    FloatRepeat(usize, usize),
}

/// An optional frame still allowed.
#[derive(Clone, Debug)]
struct Open {
    key: String,
    exchange: usize,
    index: usize,
    after: usize,
}

/// Matches one connection's observations in one exchange against its plan, with the floats
/// still open from earlier exchanges. Required items are tried before optional ones.
fn match_exchange(
    exchange: usize,
    plan: Option<&ConnPlan>,
    actual: &[String],
    open: &[Open],
) -> Option<Vec<Match>> {
    let items: Vec<String> = plan.map_or_else(Vec::new, |p| p.keys.clone());
    let groups: Vec<(usize, usize, Race)> = plan.map_or_else(Vec::new, |p| p.groups.clone());
    // Required diffs that may come twice.
    let repeatable: Vec<bool> = plan.map_or_else(Vec::new, |p| {
        p.items
            .iter()
            .map(|o| p.repeats.is_some() && is_diff_frame(o))
            .collect()
    });
    let mut floats: Vec<Open> = open.to_vec();
    if let Some(p) = plan {
        for (index, f) in p.floats.iter().enumerate() {
            floats.push(Open {
                key: f.key.clone(),
                exchange,
                index,
                after: f.after,
            });
        }
    }
    // The start of the group holding each item (the item itself if it is in none).
    let group_start: Vec<usize> = (0..items.len())
        .map(|k| {
            groups
                .iter()
                .find(|(s, e, _)| *s <= k && k < *e)
                .map_or(k, |(s, _, _)| *s)
        })
        .collect();
    // Optional frames (leave diffs, all of them) that may come twice.
    let floats_repeat = plan.is_some_and(|p| p.repeats.is_some());
    let mut out = Vec::new();
    struct Ctx<'a> {
        actual: &'a [String],
        items: &'a [String],
        group_start: &'a [usize],
        floats: &'a [Open],
        repeatable: &'a [bool],
        floats_repeat: bool,
        exchange: usize,
    }
    /// Which items, floats, repeats and second floats are matched so far.
    struct Used {
        req: Vec<bool>,
        float: Vec<bool>,
        repeat: Vec<bool>,
        float_twice: Vec<bool>,
    }
    fn dfs(pos: usize, cx: &Ctx<'_>, used: &mut Used, out: &mut Vec<Match>) -> bool {
        let Ctx {
            actual,
            items,
            group_start,
            floats,
            repeatable,
            floats_repeat,
            exchange,
        } = *cx;
        let Some(a) = actual.get(pos) else {
            return used.req.iter().all(|u| *u);
        };
        let done_before = |used: &[bool], n: usize| used.iter().take(n).all(|u| *u);
        for k in 0..items.len() {
            if used.req[k] || items[k] != *a || !done_before(&used.req, group_start[k]) {
                continue;
            }
            used.req[k] = true;
            out.push(Match::Required(k));
            if dfs(pos + 1, cx, used, out) {
                return true;
            }
            out.pop();
            used.req[k] = false;
        }
        for (f, fl) in floats.iter().enumerate() {
            let anchored = fl.exchange < exchange || done_before(&used.req, fl.after);
            if used.float[f] || fl.key != *a || !anchored {
                continue;
            }
            used.float[f] = true;
            out.push(Match::Float(fl.exchange, fl.index));
            if dfs(pos + 1, cx, used, out) {
                return true;
            }
            out.pop();
            used.float[f] = false;
        }
        for k in 0..items.len() {
            if !repeatable[k] || used.repeat[k] || items[k] != *a {
                continue;
            }
            used.repeat[k] = true;
            out.push(Match::Repeat(k));
            if dfs(pos + 1, cx, used, out) {
                return true;
            }
            out.pop();
            used.repeat[k] = false;
        }
        for (f, fl) in floats.iter().enumerate() {
            if !floats_repeat || !used.float[f] || used.float_twice[f] || fl.key != *a {
                continue;
            }
            used.float_twice[f] = true;
            out.push(Match::FloatRepeat(fl.exchange, fl.index));
            if dfs(pos + 1, cx, used, out) {
                return true;
            }
            out.pop();
            used.float_twice[f] = false;
        }
        false
    }
    let cx = Ctx {
        actual,
        items: &items,
        group_start: &group_start,
        floats: &floats,
        repeatable: &repeatable,
        floats_repeat,
        exchange,
    };
    let mut used = Used {
        req: vec![false; items.len()],
        float: vec![false; floats.len()],
        repeat: vec![false; items.len()],
        float_twice: vec![false; floats.len()],
    };
    dfs(0, &cx, &mut used, &mut out).then_some(out)
}

/// How each connection's observations of each exchange matched, or where that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment {
    /// Per exchange, per connection (in the actual transcript's order): the matches.
    pub exchanges: Vec<Vec<(String, Vec<Match>)>>,
    /// The first `(exchange, connection)` whose observations fit no allowed ordering.
    pub failed_at: Option<(usize, String)>,
}

/// Finds, for every connection, an allowed ordering that the actual observations follow.
pub fn align(plan: &Plan, actual: &Transcript) -> Alignment {
    let mut exchanges = Vec::new();
    let mut open: Vec<(String, Open)> = Vec::new();
    let mut failed_at = None;
    let empty = ExchangePlan { conns: Vec::new() };
    let mut namer = RefNamer::default();
    for (j, ex) in actual.exchanges.iter().enumerate() {
        let p = plan.exchanges.get(j).unwrap_or(&empty);
        let mut per = Vec::new();
        // Connections with expectations but no observations still have to be checked.
        let mut conns: Vec<&str> = ex.observed.iter().map(|(c, _)| c.as_str()).collect();
        for c in &p.conns {
            if !conns.contains(&c.conn.as_str()) {
                conns.push(&c.conn);
            }
        }
        for conn in conns {
            let seen: Vec<String> = ex
                .observed
                .iter()
                .find(|(c, _)| c == conn)
                .map_or(&[][..], |(_, v)| v.as_slice())
                .iter()
                .map(|o| match_key(o, &mut namer))
                .collect();
            let open_here: Vec<Open> = open
                .iter()
                .filter(|(c, _)| c == conn)
                .map(|(_, o)| o.clone())
                .collect();
            let cp = p.conn(conn);
            match match_exchange(j, cp, &seen, &open_here) {
                Some(matches) => {
                    // Floats consumed are gone; floats anchored here open for later exchanges.
                    open.retain(|(c, o)| {
                        c != conn || !matches.contains(&Match::Float(o.exchange, o.index))
                    });
                    if let Some(cp) = cp {
                        for (index, f) in cp.floats.iter().enumerate() {
                            if !matches.contains(&Match::Float(j, index)) {
                                open.push((
                                    conn.to_owned(),
                                    Open {
                                        key: f.key.clone(),
                                        exchange: j,
                                        index,
                                        after: 0,
                                    },
                                ));
                            }
                        }
                    }
                    per.push((conn.to_owned(), matches));
                }
                None => {
                    if failed_at.is_none() {
                        failed_at = Some((j, conn.to_owned()));
                    }
                }
            }
        }
        exchanges.push(per);
        if failed_at.is_some() {
            break;
        }
    }
    Alignment {
        exchanges,
        failed_at,
    }
}

impl Plan {
    /// The float with this address.
    pub fn float(&self, exchange: usize, conn: &str, index: usize) -> Option<&Float> {
        self.exchanges.get(exchange)?.conn(conn)?.floats.get(index)
    }

    /// Whether a connection has seen everything it must see in exchange `j`: every required
    /// item has a counterpart among `seen`, or `seen` already holds as many observations as
    /// the required ones plus every optional frame that could still come (then waiting longer
    /// cannot make the exchange pass).
    pub fn exchange_done(&self, j: usize, conn: &str, seen: &[Observed]) -> bool {
        let Some(ex) = self.exchanges.get(j) else {
            return true;
        };
        let Some(cp) = ex.conn(conn) else {
            return true;
        };
        let mut keys: Vec<String> = seen.iter().map(wild_key).collect();
        let all_found = cp.items.iter().all(|item| {
            let k = wild_key(item);
            match keys.iter().position(|s| *s == k) {
                Some(i) => {
                    keys.remove(i);
                    true
                }
                None => false,
            }
        });
        let floats_possible: usize = self
            .exchanges
            .iter()
            .take(j + 1)
            .filter_map(|e| e.conn(conn))
            .map(|c| c.floats.len())
            .sum();
        let repeats = if cp.repeats.is_some() {
            cp.items.iter().filter(|o| is_diff_frame(o)).count() + cp.floats.len()
        } else {
            0
        };
        all_found || seen.len() >= cp.items.len() + floats_possible + repeats
    }

    /// In words, what connection `conn` may see in exchange `j`, for failure reports; refs
    /// are numbered as in the case's expected transcript.
    pub fn describe(&self, j: usize, conn: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Some(cp) = self.exchanges.get(j).and_then(|e| e.conn(conn)) else {
            out.push("nothing".to_owned());
            return out;
        };
        let mut k = 0;
        while k < cp.items.len() {
            if let Some((s, e, race)) = cp.groups.iter().find(|(s, _, _)| *s == k) {
                let members: Vec<String> = (*s..*e).map(|i| shown(cp, i)).collect();
                out.push(format!(
                    "in either order ({}): {}",
                    race.label(),
                    members.join(" | ")
                ));
                k = *e;
            } else {
                out.push(shown(cp, k));
                k += 1;
            }
        }
        for f in &cp.floats {
            out.push(format!(
                "may also receive, after item {} or later ({}): {}",
                f.after,
                f.race.label(),
                f.key
            ));
        }
        if let Some(race) = cp.repeats {
            out.push(format!(
                "each presence_diff above, required or optional, may come twice ({}: the \
                 ended channel's subscription lingers)",
                race.label()
            ));
        }
        for (i, e) in self.exchanges.iter().enumerate().take(j) {
            if let Some(c) = e.conn(conn) {
                for f in &c.floats {
                    out.push(format!(
                        "may also receive, still open from exchange {} ({}): {}",
                        i + 1,
                        f.race.label(),
                        f.key
                    ));
                }
            }
        }
        out
    }
}
