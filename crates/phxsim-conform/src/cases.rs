//! The numbered catalogue: one client script per behaviour of the reference channel
//! (reference-channel.md), each made of steps of the Phoenix recordings.
//!
//! A case replays recorded steps on fresh connections and its own topic, so cases neither see
//! each other's presences nor depend on each other's results. Most behaviours need state built
//! by earlier recorded steps (a `presence_state` lists who is there), so a case is a *prelude*
//! (the steps that build that state, whose frames are checked too) followed by the steps under
//! test. A prelude only leaves out recorded steps that change no presence, so every expected
//! frame is exactly what Phoenix sent; `tests/catalogue.rs` checks that every `phx_ref` a case
//! expects is created inside the case.
//!
//! Cases 1-25 use steps of the reference session ([`CASES`]); cases 26 on are the authored
//! scripts ([`crate::authored`]), each self-contained, whose steps come from their own
//! recording of the real Phoenix 1.7.21. Each case says which Phoenix versions it describes
//! ([`Versions`]); [`catalogue_for`] picks the ones for a version.

use crate::authored::{self, PhoenixVersion, Versions};
use crate::recording::{Recording, authored_recording, reference};
use crate::script::{Action, Exchange, MissingStep, exchanges_for, rewrite_exchanges};
use phxsim_wire::Serializer;
use std::sync::LazyLock;

/// A recorded step, optionally cut after its first `limit` exchanges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepRef {
    /// The step marker's exact text.
    pub title: &'static str,
    /// Keep only this many exchanges of the step.
    pub limit: Option<usize>,
}

const fn step(title: &'static str) -> StepRef {
    StepRef { title, limit: None }
}

const fn first(n: usize, title: &'static str) -> StepRef {
    StepRef {
        title,
        limit: Some(n),
    }
}

/// How a case may deviate from Phoenix and still count as conforming (result `non-strict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looseness {
    /// The code of a close frame the server sends on its own initiative may differ: Phoenix
    /// leaves it to its web server (Bandit sent 1011 for a bad frame and 1002 for an idle
    /// socket, with empty reasons), and phxsim chooses codes that say what happened. A close
    /// frame is still required; so is every frame before and after it.
    CloseCode,
}

/// One conformance case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The case number, stable across releases.
    pub id: u8,
    /// A short name for tables and files.
    pub slug: &'static str,
    /// What happens, as one sentence.
    pub title: &'static str,
    /// Steps that build the state the behaviour needs (checked, but not the point).
    pub prelude: &'static [StepRef],
    /// The steps under test.
    pub steps: &'static [StepRef],
    /// Only for V2 (binary frames do not exist in V1).
    pub v2_only: bool,
    /// Which Phoenix versions the case describes (1.8 changed a few behaviours).
    pub versions: Versions,
    /// Whether the steps come from the authored cases' recording ([`crate::authored`]) rather
    /// than the reference session's.
    pub authored: bool,
    /// Where a deviation is accepted, and why.
    pub loose: Option<(Looseness, &'static str)>,
    /// Anything else a reader of the result should know (Phoenix's own non-determinism).
    pub note: Option<&'static str>,
}

impl Case {
    /// `07-noreply`.
    pub fn name(&self) -> String {
        format!("{:02}-{}", self.id, self.slug)
    }

    /// Whether the case runs on `vsn`.
    pub fn applies_to(&self, vsn: Serializer) -> bool {
        vsn == Serializer::V2 || !self.v2_only
    }
}

const A_CONNECT: &str = "A connect";
const A_JOIN: &str = "A join room:lobby with meta";
const B_JOIN: &str = "B connect + join room:lobby";
const A_UPDATE: &str = "A update_meta status=away";
const A_HEARTBEAT: &str = "A heartbeat";
const A_PING: &str = "A ping (reply ok with payload)";
const A_ERROR_REPLY: &str = "A error_reply";
const A_NOREPLY: &str = "A noreply event (no reply expected)";
const A_LIST: &str = "A list presences via reply";
const A_UNROUTED: &str = "A join nonexistent topic (no channel route)";
const A_UNJOINED: &str = "A push to a topic it has not joined";
const A_DENIED: &str = "A join room:denied with deny=true (join returns error)";
const A_DUPLICATE: &str = "A duplicate join of room:lobby (already joined)";
const A_BINARY: &str = "A binary push (v2 binary frame) event ping";
const B_LEAVE: &str = "B phx_leave room:lobby";
const B_REJOIN_ABORT: &str = "B rejoin room:lobby then abort TCP (no close frame)";
const C_NO_USER: &str = "C connect without user_id (connect/3 returns :error)";
const D_BAD_VSN: &str = "D connect with unsupported vsn=3.0.0";
const E_WRONG_SHAPE: &str = "E connect, join, then send valid-JSON-but-wrong-shape frame";
const F_NOT_JSON: &str = "F connect, join, then send malformed (non-JSON) text frame";
const G_WS_PING: &str = "G connect, then WebSocket ping control frame + idle";
const H_CRASH: &str = "H connect, join, push event whose handler raises (channel crash)";
const H_AFTER_CRASH: &str = "H push to the crashed channel's topic, then rejoin";
const I_IDLE: &str = "I connect to /short (websocket timeout 1500ms), join, then stay idle 2.5s";
const A_CLOSE: &str = "A graceful close (1000)";

/// A joined.
const JOINED: &[StepRef] = &[step(A_CONNECT), step(A_JOIN)];
/// A and B joined.
const PAIR: &[StepRef] = &[step(A_CONNECT), step(A_JOIN), step(B_JOIN)];
/// A and B joined, A updated.
const UPDATED: &[StepRef] = &[step(A_CONNECT), step(A_JOIN), step(B_JOIN), step(A_UPDATE)];
/// A joined again as "Alice-again", B joined and left: the room every later recorded step saw.
const AGAIN: &[StepRef] = &[
    step(A_CONNECT),
    step(A_JOIN),
    step(B_JOIN),
    step(A_UPDATE),
    step(A_DUPLICATE),
    step(B_LEAVE),
];
/// [`AGAIN`] plus hank, who crashed his channel and joined again.
const WITH_HANK: &[StepRef] = &[
    step(A_CONNECT),
    step(A_JOIN),
    step(B_JOIN),
    step(A_UPDATE),
    step(A_DUPLICATE),
    step(B_LEAVE),
    step(H_CRASH),
    step(H_AFTER_CRASH),
];

const ORDER_NOTE: &str = "Phoenix sends the joiner's own presence_diff and its presence_state in \
either order (the diff goes through the tracker and PubSub, the state is a direct push); both \
orders pass.";

const CLOSE_BAD_FRAME: &str = "Phoenix crashes the connection and its web server picks the close \
code (Bandit: 1011, empty reason); a server may close with another code that names the cause.";

const CLOSE_IDLE: &str = "the idle close code comes from Phoenix's web server (Bandit: 1002, \
empty reason); a server may close with another code that names the cause.";

/// The catalogue, in order.
pub const CASES: &[Case] = &[
    Case {
        id: 1,
        slug: "join",
        title: "A join replies ok with joined_as, then the joiner gets its own join diff and a \
                presence_state holding its meta (status online merged with the given meta)",
        prelude: &[step(A_CONNECT)],
        steps: &[step(A_JOIN)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 2,
        slug: "state-and-diff",
        title: "A second joiner gets a presence_state with both users; the member already there \
                gets the join as a presence_diff",
        prelude: JOINED,
        steps: &[step(B_JOIN)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 3,
        slug: "update-meta",
        title: "update_meta replies ok {} and everyone gets one diff: the new meta (phx_ref, \
                phx_ref_prev) in joins, the old one in leaves",
        prelude: PAIR,
        steps: &[step(A_UPDATE)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 4,
        slug: "heartbeat",
        title: "A heartbeat on topic phoenix needs no join and replies ok {} with a null join_ref",
        prelude: &[step(A_CONNECT)],
        steps: &[step(A_HEARTBEAT)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 5,
        slug: "ping",
        title: "ping replies ok with the payload echoed",
        prelude: JOINED,
        steps: &[step(A_PING)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 6,
        slug: "error-reply",
        title: "error_reply replies error {reason: nope}",
        prelude: JOINED,
        steps: &[step(A_ERROR_REPLY)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 7,
        slug: "noreply",
        title: "noreply sends nothing back: the next frame is the reply to a heartbeat sent after it",
        prelude: JOINED,
        steps: &[step(A_NOREPLY), step(A_HEARTBEAT)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(
            "The recorded heartbeat step is replayed after noreply as a fence, so a stray reply \
             shows up in order instead of depending on a timeout.",
        ),
    },
    Case {
        id: 8,
        slug: "list",
        title: "list replies ok with the topic's presences, the updated meta with its phx_ref_prev",
        prelude: UPDATED,
        steps: &[step(A_LIST)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 9,
        slug: "join-unmatched-topic",
        title: "A join of a topic with no channel route gets error {reason: unmatched topic} with \
                a null join_ref",
        prelude: &[step(A_CONNECT)],
        steps: &[step(A_UNROUTED)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 10,
        slug: "push-unjoined-topic",
        title: "A push to a routed topic that is not joined gets error {reason: unmatched topic}",
        prelude: &[step(A_CONNECT)],
        steps: &[step(A_UNJOINED)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 11,
        slug: "join-denied",
        title: "A join with {deny: true} gets error {reason: unauthorized} and tracks nothing",
        prelude: &[step(A_CONNECT)],
        steps: &[step(A_DENIED)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 12,
        slug: "duplicate-join",
        title: "A second join of a joined topic: others see the old meta leave, the joiner gets the \
                new join's reply, then phx_close for the old join_ref, then a fresh join",
        prelude: UPDATED,
        steps: &[step(A_DUPLICATE)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 13,
        slug: "binary-push",
        title: "A V2 binary push of ping is answered by a binary reply (kind 1) echoing the bytes",
        prelude: AGAIN,
        steps: &[step(A_BINARY)],
        v2_only: true,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(
            "The recorded binary push carries join_ref 11, so the prelude includes the duplicate \
             join that made 11 the current join_ref.",
        ),
    },
    Case {
        id: 14,
        slug: "leave",
        title: "phx_leave replies ok {} then phx_close; the others get the leave diff",
        prelude: PAIR,
        steps: &[step(B_LEAVE)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 15,
        slug: "rejoin-after-leave",
        title: "Joining again after a leave on the same socket is a fresh join",
        prelude: AGAIN,
        steps: &[first(1, B_REJOIN_ABORT)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 16,
        slug: "dropped-tcp",
        title: "A socket whose TCP connection drops without a close frame loses its presences: \
                the others get the leave diff",
        prelude: AGAIN,
        steps: &[step(B_REJOIN_ABORT)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 17,
        slug: "missing-user-id",
        title: "A connect without user_id is refused with HTTP 403 and an empty body",
        prelude: &[],
        steps: &[step(C_NO_USER)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 18,
        slug: "bad-vsn",
        title: "A connect with vsn=3.0.0 is refused with HTTP 403 and an empty body",
        prelude: &[],
        steps: &[step(D_BAD_VSN)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 19,
        slug: "wrong-shape-frame",
        title: "Valid JSON of the wrong shape closes the whole connection; its presence leaves",
        prelude: AGAIN,
        steps: &[step(E_WRONG_SHAPE)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: Some((Looseness::CloseCode, CLOSE_BAD_FRAME)),
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 20,
        slug: "non-json-frame",
        title: "A text frame that is not JSON closes the whole connection; its presence leaves",
        prelude: AGAIN,
        steps: &[step(F_NOT_JSON)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: Some((Looseness::CloseCode, CLOSE_BAD_FRAME)),
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 21,
        slug: "ws-ping",
        title: "A WebSocket ping control frame is answered with a pong",
        prelude: &[],
        steps: &[step(G_WS_PING)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
    Case {
        id: 22,
        slug: "channel-crash",
        title: "A handler that raises: the client gets phx_error for the join_ref, the presence \
                leaves, the socket stays open",
        prelude: AGAIN,
        steps: &[step(H_CRASH)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 23,
        slug: "push-after-crash-and-rejoin",
        title: "After a channel crash a push to its topic gets unmatched topic; joining again works",
        prelude: &[
            step(A_CONNECT),
            step(A_JOIN),
            step(B_JOIN),
            step(A_UPDATE),
            step(A_DUPLICATE),
            step(B_LEAVE),
            step(H_CRASH),
        ],
        steps: &[step(H_AFTER_CRASH)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: Some(ORDER_NOTE),
    },
    Case {
        id: 24,
        slug: "idle-timeout",
        title: "A socket that sends nothing for the idle timeout is closed; its presence leaves",
        prelude: WITH_HANK,
        steps: &[step(I_IDLE)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: Some((Looseness::CloseCode, CLOSE_IDLE)),
        note: Some(
            "The runner heartbeats the case's other sockets while it waits, so only the idle one \
             times out; their heartbeat replies are left out of the transcript.",
        ),
    },
    Case {
        id: 25,
        slug: "graceful-close",
        title: "A client close (1000) is answered with 1000, and the socket's presence leaves",
        prelude: WITH_HANK,
        steps: &[step(A_CLOSE)],
        v2_only: false,
        versions: Versions::All,
        authored: false,
        loose: None,
        note: None,
    },
];

/// A case bound to one recording and one topic: everything the runner needs.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseScript {
    /// The case.
    pub case: Case,
    /// The serializer (the recording's).
    pub vsn: Serializer,
    /// The topic the recorded `room:lobby` became.
    pub topic: String,
    /// Connections in order of first use; transcripts list each exchange's frames in this
    /// order, since order between connections is not meaningful.
    pub conns: Vec<String>,
    /// The exchanges, prelude first.
    pub exchanges: Vec<Exchange>,
    /// How many of `exchanges` are prelude.
    pub prelude_len: usize,
}

/// The topic a case runs on: its own, so that cases do not share presences, and one per
/// serializer, so that V1 and V2 runs against one server do not either.
pub fn case_topic(prefix: &str, case: &Case, vsn: Serializer) -> String {
    let v = match vsn {
        Serializer::V1 => "v1",
        Serializer::V2 => "v2",
    };
    format!("{prefix}-{v}-{:02}", case.id)
}

/// The default topic prefix.
pub const DEFAULT_TOPIC_PREFIX: &str = "room:conform";

impl CaseScript {
    /// Builds a case's script from a recording.
    pub fn build(
        case: &Case,
        recording: &Recording,
        topic: &str,
    ) -> Result<CaseScript, MissingStep> {
        let refs = |steps: &[StepRef]| -> Vec<(&str, Option<usize>)> {
            steps.iter().map(|s| (s.title, s.limit)).collect()
        };
        let mut exchanges = exchanges_for(recording, &refs(case.prelude))?;
        let prelude_len = exchanges.len();
        exchanges.extend(exchanges_for(recording, &refs(case.steps))?);
        rewrite_exchanges(&mut exchanges, topic).map_err(|e| MissingStep {
            source_name: recording.source.clone(),
            title: case.name(),
            detail: Some(e.to_string()),
        })?;
        let mut conns: Vec<String> = Vec::new();
        let mut note = |c: &str| {
            if !conns.iter().any(|k| k == c) {
                conns.push(c.to_owned());
            }
        };
        for ex in &exchanges {
            note(ex.action.conn());
            for (c, _) in &ex.expect {
                note(c);
            }
        }
        Ok(CaseScript {
            case: *case,
            vsn: recording.vsn,
            topic: topic.to_owned(),
            conns,
            exchanges,
            prelude_len,
        })
    }

    /// Whether exchange `i` belongs to the prelude.
    pub fn in_prelude(&self, i: usize) -> bool {
        i < self.prelude_len
    }

    /// Whether the script waits for an idle timeout.
    pub fn idles(&self) -> bool {
        self.exchanges
            .iter()
            .any(|e| matches!(e.action, Action::Idle { .. }))
    }
}

/// The authored cases as [`Case`]s, parsed once from the compiled-in case file. Their text
/// lives as long as the process (the catalogue is static), hence the leaks.
static AUTHORED: LazyLock<Result<Vec<Case>, String>> = LazyLock::new(|| {
    let parsed = authored::parse(authored::CASES_TEXT).map_err(|e| e.to_string())?;
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    Ok(parsed
        .iter()
        .map(|a| {
            let refs = |prelude: bool| -> &'static [StepRef] {
                let v: Vec<StepRef> = a
                    .steps
                    .iter()
                    .filter(|s| s.prelude == prelude)
                    .map(|s| step(leak(&s.title)))
                    .collect();
                Box::leak(v.into_boxed_slice())
            };
            Case {
                id: a.id,
                slug: leak(&a.slug),
                title: leak(&a.title),
                prelude: refs(true),
                steps: refs(false),
                v2_only: a.v2_only,
                versions: a.versions,
                authored: true,
                loose: a
                    .loose_close
                    .as_deref()
                    .map(|why| (Looseness::CloseCode, leak(why))),
                note: a.note.as_deref().map(leak),
            }
        })
        .collect())
});

/// Every case: the reference session's, then the authored ones.
pub fn all_cases() -> Result<Vec<&'static Case>, CatalogueError> {
    let authored = AUTHORED.as_ref().map_err(|e| CatalogueError(e.clone()))?;
    Ok(CASES.iter().chain(authored.iter()).collect())
}

/// Every case that applies to `vsn` and describes Phoenix 1.7.21, built from the built-in
/// recordings.
pub fn catalogue(vsn: Serializer, topic_prefix: &str) -> Result<Vec<CaseScript>, CatalogueError> {
    catalogue_for(vsn, PhoenixVersion::V1_7_21, topic_prefix)
}

/// Every case that applies to `vsn` and describes `phoenix`.
pub fn catalogue_for(
    vsn: Serializer,
    phoenix: PhoenixVersion,
    topic_prefix: &str,
) -> Result<Vec<CaseScript>, CatalogueError> {
    let recording = reference(vsn).map_err(|e| CatalogueError(e.to_string()))?;
    let authored_rec = authored_recording(vsn).map_err(|e| CatalogueError(e.to_string()))?;
    all_cases()?
        .into_iter()
        .filter(|c| c.applies_to(vsn) && c.versions.includes(phoenix))
        .map(|c| {
            let rec = if c.authored {
                &authored_rec
            } else {
                &recording
            };
            let topic = case_topic(topic_prefix, c, vsn);
            CaseScript::build(c, rec, &topic).map_err(|e| CatalogueError(e.to_string()))
        })
        .collect()
}

/// Every reference-session case that applies to the recording's serializer, built from
/// `recording`.
pub fn catalogue_from(
    recording: &Recording,
    topic_prefix: &str,
) -> Result<Vec<CaseScript>, CatalogueError> {
    CASES
        .iter()
        .filter(|c| c.applies_to(recording.vsn))
        .map(|c| {
            let topic = case_topic(topic_prefix, c, recording.vsn);
            CaseScript::build(c, recording, &topic).map_err(|e| CatalogueError(e.to_string()))
        })
        .collect()
}

/// The catalogue cannot be built from a recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conformance catalogue: {0}")]
pub struct CatalogueError(pub String);

/// The case with this number.
pub fn case_by_id(id: u8) -> Option<&'static Case> {
    all_cases().ok()?.into_iter().find(|c| c.id == id)
}
