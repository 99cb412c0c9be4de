//! The `tracker-ops` driver (`crates/phxsim/docs/tracker-ops.md`): several named replicas in one
//! process, stepped by JSON op lines, each answered by one JSON line. Pure: a line in, a line
//! out, so the CLI, the vector tests and the property tests share it.

use crate::state::State;
use crate::types::{Diff, ReplicaRef, Value, ValueKey};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;

/// Every replica of a stream is at vsn 1: no op restarts one.
const VSN: u64 = 1;

/// Replicas by name, and the step counter.
#[derive(Default)]
pub struct Driver {
    replicas: BTreeMap<String, State>,
    step: u64,
}

/// Why an op line was refused. The text is free prose; only the fact that a line is an
/// error is part of the contract.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Json(String),
    #[error("op line is not a JSON object")]
    NotObject,
    #[error("unknown op: {0}")]
    UnknownOp(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0} must be {1}")]
    WrongType(&'static str, &'static str),
    #[error("unknown replica: {0}")]
    UnknownReplica(String),
    #[error("replica already exists: {0}")]
    Exists(String),
    #[error("{0} and {1} must differ")]
    Same(&'static str, &'static str),
    #[error("{0}")]
    Tracker(#[from] crate::error::TrackerError),
}

/// Renders a value as the driver prints it.
pub fn value_json(v: &Value) -> Json {
    json!({
        "topic": v.key.topic,
        "key": v.key.key,
        "pid": v.key.pid,
        "meta": v.meta,
        "tag": [v.tag.replica.name, v.tag.replica.vsn, v.tag.clock],
    })
}

fn str_field<'a>(obj: &'a Map<String, Json>, name: &'static str) -> Result<&'a str, OpError> {
    match obj.get(name) {
        None => Err(OpError::Missing(name)),
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(OpError::WrongType(name, "a string")),
    }
}

fn meta_field(obj: &Map<String, Json>) -> Result<Json, OpError> {
    match obj.get("meta") {
        None => Err(OpError::Missing("meta")),
        Some(m @ Json::Object(_)) => Ok(m.clone()),
        Some(_) => Err(OpError::WrongType("meta", "an object")),
    }
}

fn value_key(obj: &Map<String, Json>) -> Result<ValueKey, OpError> {
    Ok(ValueKey::new(
        str_field(obj, "topic")?,
        str_field(obj, "pid")?,
        str_field(obj, "key")?,
    ))
}

fn rref(name: &str) -> ReplicaRef {
    ReplicaRef::new(name, VSN)
}

impl Driver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The replica named `name`, if created.
    pub fn replica(&self, name: &str) -> Option<&State> {
        self.replicas.get(name)
    }

    /// Handles one input line. Blank and `#` lines give `None` and do not count as a step.
    pub fn line(&mut self, line: &str) -> Option<Json> {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        self.step += 1;
        let step = self.step;
        Some(match self.apply(trimmed) {
            Ok((op, diff)) => self.report(step, &op, &diff),
            Err(e) => json!({"step": step, "error": e.to_string()}),
        })
    }

    /// Answers a line that could not even be read as text (invalid UTF-8): it counts as a
    /// step and gets an error line, like any other bad line.
    pub fn unreadable_line(&mut self, why: &str) -> Json {
        self.step += 1;
        json!({"step": self.step, "error": format!("line is not valid UTF-8: {why}")})
    }

    fn report(&self, step: u64, op: &str, diff: &Diff) -> Json {
        let replicas: Map<String, Json> = self
            .replicas
            .iter()
            .map(|(name, st)| {
                let context: Map<String, Json> = st
                    .clocks()
                    .into_iter()
                    .map(|(r, c)| (r.name.into(), json!(c)))
                    .collect();
                let online: Vec<Json> = st.online().iter().map(value_json).collect();
                (name.clone(), json!({"online": online, "context": context}))
            })
            .collect();
        let mut joins = diff.joins.clone();
        let mut leaves = diff.leaves.clone();
        joins.sort_by(|a, b| a.tag.cmp(&b.tag));
        leaves.sort_by(|a, b| a.tag.cmp(&b.tag));
        json!({
            "step": step,
            "op": op,
            "joins": joins.iter().map(value_json).collect::<Vec<_>>(),
            "leaves": leaves.iter().map(value_json).collect::<Vec<_>>(),
            "replicas": replicas,
        })
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut State, OpError> {
        self.replicas
            .get_mut(name)
            .ok_or_else(|| OpError::UnknownReplica(name.to_owned()))
    }

    fn known(&self, name: &str) -> Result<&State, OpError> {
        self.replicas
            .get(name)
            .ok_or_else(|| OpError::UnknownReplica(name.to_owned()))
    }

    /// Validates fully before touching any state, so a refused op leaves everything as it was.
    fn apply(&mut self, line: &str) -> Result<(String, Diff), OpError> {
        let parsed: Json = serde_json::from_str(line).map_err(|e| OpError::Json(e.to_string()))?;
        let Json::Object(obj) = parsed else {
            return Err(OpError::NotObject);
        };
        let op = str_field(&obj, "op")?.to_owned();
        let diff = match op.as_str() {
            "new" => {
                let at = str_field(&obj, "at")?;
                if self.replicas.contains_key(at) {
                    return Err(OpError::Exists(at.to_owned()));
                }
                self.replicas.insert(at.to_owned(), State::new(rref(at)));
                Diff::default()
            }
            "join" => {
                let at = str_field(&obj, "at")?;
                let (key, meta) = (value_key(&obj)?, meta_field(&obj)?);
                self.get_mut(at)?.join(key, meta)?;
                Diff::default()
            }
            "leave" => {
                let at = str_field(&obj, "at")?;
                let key = value_key(&obj)?;
                self.get_mut(at)?.leave(&key);
                Diff::default()
            }
            "leave_pid" => {
                let at = str_field(&obj, "at")?;
                let pid = str_field(&obj, "pid")?;
                self.get_mut(at)?.leave_pid(pid);
                Diff::default()
            }
            "update" => {
                let at = str_field(&obj, "at")?;
                let (key, meta) = (value_key(&obj)?, meta_field(&obj)?);
                self.get_mut(at)?.update(&key, meta)?;
                Diff::default()
            }
            "replica_up" | "replica_down" | "remove_down" => {
                let at = str_field(&obj, "at")?;
                let remote = str_field(&obj, "remote")?;
                self.known(remote)?;
                if at == remote {
                    return Err(OpError::Same("at", "remote"));
                }
                let st = self.get_mut(at)?;
                match op.as_str() {
                    "replica_up" => st.replica_up(&rref(remote))?,
                    "replica_down" => st.replica_down(&rref(remote))?,
                    _ => {
                        st.remove_down(&rref(remote))?;
                        Diff::default()
                    }
                }
            }
            "flush" => {
                let at = str_field(&obj, "at")?;
                self.get_mut(at)?.flush();
                Diff::default()
            }
            "send_delta" | "transfer" => {
                let from = str_field(&obj, "from")?;
                let to = str_field(&obj, "to")?;
                self.known(from)?;
                self.known(to)?;
                if from == to {
                    return Err(OpError::Same("from", "to"));
                }
                if op == "send_delta" {
                    let delta = self.known(from)?.delta().clone();
                    self.get_mut(to)?.merge_delta(&delta)
                } else {
                    let receiver = self.known(to)?;
                    let (to_ref, to_ctx) = (receiver.replica().clone(), receiver.clocks());
                    let extract = self.known(from)?.extract(&to_ref, &to_ctx);
                    self.get_mut(to)?.merge_extract(&extract)
                }
            }
            other => return Err(OpError::UnknownOp(other.to_owned())),
        };
        Ok((op, diff))
    }
}
