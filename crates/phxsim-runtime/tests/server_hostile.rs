//! Hostile input: seeded random frames (text and binary, mutated from valid ones) never take the
//! server down. Each connection either goes on answering or is closed with a close code, and a
//! bystander socket on the same server keeps working throughout.

mod server_common;

use phxsim_runtime::server::{ServerConfig, close_code};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use server_common::*;

const SEEDS: [&str; 6] = [
    r#"["1","1","room:lobby","phx_join",{"meta":{"a":1}}]"#,
    r#"["1","2","room:lobby","update_meta",{"s":"x"}]"#,
    r#"[null,"3","phoenix","heartbeat",{}]"#,
    r#"["1","4","room:lobby","phx_leave",{}]"#,
    r#"["1","5","room:lobby","list",{}]"#,
    r#"["1","6","room:lobby","ping",{"deep":[[[[[]]]]]}]"#,
];

fn mutate(rng: &mut ChaCha8Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..4) {
            0 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.r#gen();
            }
            1 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.gen_range(0..=b.len());
                b.insert(i, rng.r#gen());
            }
            _ => b.extend_from_slice(base),
        }
    }
    b
}

#[tokio::test]
async fn random_frames_close_at_most_their_own_connection() {
    let (_server, addr) = serve(ServerConfig::default()).await;
    let mut bystander = connect(addr, "vsn=2.0.0&user_id=b").await;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut closed = 0;
    for round in 0..40 {
        let mut c = connect(addr, "vsn=2.0.0&user_id=h").await;
        for _ in 0..10 {
            let base = SEEDS[rng.gen_range(0..SEEDS.len())].as_bytes();
            let bytes = mutate(&mut rng, base);
            if rng.gen_bool(0.5) {
                c.send_binary(bytes).await;
            } else {
                c.send(&String::from_utf8_lossy(&bytes)).await;
            }
        }
        // Drain until the server closes the socket or goes quiet.
        loop {
            match c.next_within(std::time::Duration::from_millis(200)).await {
                Some(Got::Close(Some((code, _)))) => {
                    assert!(
                        [close_code::MALFORMED, close_code::TOO_BIG].contains(&code),
                        "round {round}: close code {code}"
                    );
                    closed += 1;
                    break;
                }
                Some(Got::Close(None) | Got::End) | None => break,
                Some(_) => continue,
            }
        }
        bystander
            .send(&format!(r#"[null,"{round}","phoenix","heartbeat",{{}}]"#))
            .await;
        bystander
            .expect(&format!(
                r#"[null,"{round}","phoenix","phx_reply",{{"response":{{}},"status":"ok"}}]"#
            ))
            .await;
    }
    assert!(
        closed > 10,
        "most random streams hold a malformed frame ({closed})"
    );
}
