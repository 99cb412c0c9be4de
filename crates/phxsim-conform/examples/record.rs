//! Records the authored cases (`data/cases-1.7.21.txt`) against a real Phoenix server:
//!
//! ```text
//! ../shared/phoenix/reference-server/start --port 44001 &
//! cargo run -p phxsim-conform --example record -- 127.0.0.1:44001 [CASE]...
//! ```
//!
//! writes `data/phoenix-1.7.21-cases-v1.jsonl` and `-v2.jsonl` (sockets `/socket` and
//! `/short`). With case numbers, only those cases are recorded and appended to the files (for
//! adding a case; record everything again when Phoenix changes).

use phxsim_conform::authored::{CASES_TEXT, parse};
use phxsim_conform::recorder::record;
use phxsim_wire::Serializer;
use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: record HOST:PORT [CASE]...")?;
    let only: Vec<u8> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let cases: Vec<_> = parse(CASES_TEXT)?
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .collect();
    let url = format!("ws://{addr}/socket/websocket");
    let short = format!("ws://{addr}/short/websocket");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    for (vsn, tag) in [(Serializer::V1, "v1"), (Serializer::V2, "v2")] {
        let text = record(&url, &short, &cases, vsn).await?;
        let path = data.join(format!("phoenix-1.7.21-cases-{tag}.jsonl"));
        if only.is_empty() {
            std::fs::write(&path, text)?;
        } else {
            let mut old = std::fs::read_to_string(&path).unwrap_or_default();
            old.push_str(&text);
            std::fs::write(&path, old)?;
        }
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
