//! The Chrome/Perfetto export: tracks per node and client, flows that pair each node message
//! with its receipt, global marks for steps and findings.

use phxsim_sim::trace::chrome_trace;
use serde_json::Value;

const TRANSCRIPT: &str = r#"{"t":0,"ev":"run","title":"x"}
{"t":1,"ev":"node_start","node":"a","vsn":1}
{"t":5,"ev":"node_send","from":"a","to":"b","kind":"heartbeat"}
{"t":5,"ev":"node_send","from":"a","to":"b","kind":"heartbeat"}
{"t":8,"ev":"node_recv","from":"a","to":"b","kind":"heartbeat"}
{"t":9,"ev":"node_recv","from":"a","to":"b","kind":"heartbeat"}
{"t":9,"ev":"node_recv","from":"c","to":"b","kind":"heartbeat"}
{"t":10,"ev":"frame","client":"alice","dir":"in","event":"presence_diff","data":"[]"}
{"t":10,"ev":"segment_lost","sender":"browser","from":"alice","to":"a","delay_ms":200}
{"t":10,"ev":"segment_lost","sender":"node","from":"a","to":"b","delay_ms":600}
{"t":11,"ev":"step","action":"heal"}
not json
{"t":12,"ev":"finding","kind":"ghost","subject":"a","detail":"x"}"#;

fn events(doc: &Value) -> &Vec<Value> {
    doc["traceEvents"].as_array().expect("traceEvents")
}

#[test]
fn each_message_becomes_a_flow_from_sender_to_receiver() {
    let doc = chrome_trace(TRANSCRIPT.lines());
    let starts: Vec<&Value> = events(&doc).iter().filter(|e| e["ph"] == "s").collect();
    let ends: Vec<&Value> = events(&doc).iter().filter(|e| e["ph"] == "f").collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        ends.len(),
        2,
        "the receipt from c had no send and is not a flow"
    );
    assert_eq!(starts[0]["id"], ends[0]["id"]);
    assert_eq!(starts[1]["id"], ends[1]["id"]);
    assert_ne!(starts[0]["tid"], ends[0]["tid"], "a flow crosses tracks");
    assert_eq!(ends[1]["ts"], 9000);
}

#[test]
fn tracks_are_named_and_marks_are_global() {
    let doc = chrome_trace(TRANSCRIPT.lines());
    let names: Vec<String> = events(&doc)
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b", "alice"]);
    let global: Vec<&Value> = events(&doc).iter().filter(|e| e["s"] == "g").collect();
    assert_eq!(global.len(), 2);
    assert_eq!(global[1]["name"], "ghost: x");
}

#[test]
fn a_lost_segment_is_a_mark_on_its_senders_track() {
    let doc = chrome_trace(TRANSCRIPT.lines());
    let lost: Vec<&Value> = events(&doc).iter().filter(|e| e["cat"] == "loss").collect();
    assert_eq!(lost.len(), 2);
    assert_eq!(lost[0]["name"], "segment lost alice→a (+200 ms)");
    assert_eq!(lost[0]["pid"], 2, "alice's track, with the clients");
    assert_eq!(lost[1]["name"], "segment lost a→b (+600 ms)");
    assert_eq!(lost[1]["pid"], 1, "node a's track");
    assert_eq!(lost[1]["ts"], 10_000);
}
