//! Scenarios far bigger than the catalogue's run with the real binary instead of panicking
//! inside turmoil: a crowd joining one node at once (more SYNs than turmoil's default listener
//! backlog of 64 in one step) and a held node releasing every SYN its peers sent meanwhile. What
//! no simulated host can hold is refused when the file is read, with exit 2.

use std::path::Path;
use std::process::Command;

fn replay(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phxsim"))
        .args(["replay"])
        .arg(file)
        .args(["--seed", "1"])
        .output()
        .expect("run phxsim")
}

/// `count` clients spread over `nodes`, all joining at `join_at`; `extra` is appended.
fn crowd(nodes: &[&str], count: usize, join_at: u64, duration_ms: u64, extra: &str) -> String {
    let list: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    let mut s = format!(
        "title = \"crowd\"\nnodes = [{}]\nduration_ms = {duration_ms}\n",
        list.join(", ")
    );
    for i in 0..count {
        s += &format!(
            "[[clients]]\nname = \"c{i}\"\nnode = \"{}\"\n",
            nodes[i % nodes.len()]
        );
    }
    for i in 0..count {
        s += &format!("[[timeline]]\nat_ms = {join_at}\njoin = \"c{i}\"\n");
    }
    s + extra
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("phxsim-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_passes(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("result: pass"), "{stdout}");
}

#[test]
fn two_hundred_clients_join_one_node_at_once() {
    // was: `server socket buffer full` from turmoil and exit 101
    let path = write("crowd.toml", &crowd(&["a"], 200, 100, 3000, ""));
    assert_passes(&replay(&path));
}

#[test]
fn a_released_hold_delivers_every_syn_it_kept() {
    // node a is held from 19 peers that redial it every 600 ms: the release delivers about
    // 19 × 4 SYNs in one step, more than turmoil's default backlog
    let nodes: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let links: Vec<String> = names[1..]
        .iter()
        .map(|n| format!("[\"n0\", \"{n}\"]"))
        .collect();
    let hold = format!(
        "[[timeline]]\nat_ms = 0\nhold = [{0}]\n[[timeline]]\nat_ms = 2500\nrelease = [{0}]\n\
         [tracker]\nbroadcast_period_ms = 100\n",
        links.join(", ")
    );
    let path = write("held.toml", &crowd(&names, 20, 100, 8000, &hold));
    assert_passes(&replay(&path));
}

#[test]
fn more_clients_than_the_limit_is_bad_input() {
    // one named client beside a population of the limit: the two together are one too many
    let n = phxsim_sim::capacity::MAX_CLIENTS;
    let s = format!(
        "title = \"too many\"\nnodes = [\"a\"]\nduration_ms = 1000\n\
         [[clients]]\nname = \"c\"\nnode = \"a\"\n\
         [[population]]\nnodes = [\"a\"]\ncount = {n}\ntopics = 1\njoin_ms = [0, 10]\n"
    );
    let path = write("too_many.toml", &s);
    let out = replay(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(": clients: at most {n} clients")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
