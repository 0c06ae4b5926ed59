//! The fuzz targets of fuzz/ (cargo-fuzz) run on stable as deterministic mutation loops:
//! seeds from the translation fixtures, the shipped config and hand-written streams, mutated
//! by a fixed-seed PRNG (bit flips, byte inserts, deletions, duplications, splices,
//! truncation) for a bounded time per target (`TOLLGATE_FUZZ_SECS`, default 2). A panic
//! fails the test and saves its input under target/fuzz-crashes/; saved crash inputs become
//! regression cases in tests/fixtures/fuzz/<target>/ (replayed first, every run).

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const DICT: &[&[u8]] = &[
    b"\n\n",
    b"\r\n",
    b"data: ",
    b"event: ",
    b"[DONE]",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"-1",
    b"1e999",
    b"\"type\"",
    b"\"content\"",
    b"\"tool_calls\"",
    b"\"usage\"",
    b"\"delta\"",
    b"\"index\":99999999",
    b"\xff\xfe",
    b"${X}",
    b"\t",
    b"- ",
    b"message_stop",
    b"content_block_delta",
    b"response.completed",
    b"\"choices\":[",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], base: &[u8]) -> Vec<u8> {
    let mut d = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                d.insert(i, rng.next() as u8);
            }
            2 if len > 1 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64)) + 1;
                d.drain(i..i + n);
            }
            3 if len > 1 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(256)) + 1;
                let piece = d[i..i + n].to_vec();
                let at = rng.below(d.len() + 1);
                d.splice(at..at, piece);
            }
            4 => {
                let w = DICT[rng.below(DICT.len())];
                let at = rng.below(len + 1);
                d.splice(at..at, w.iter().copied());
            }
            5 if !seeds.is_empty() => {
                let o = &seeds[rng.below(seeds.len())];
                let at = rng.below(len + 1);
                let from = rng.below(o.len() + 1);
                d.truncate(at);
                d.extend_from_slice(&o[from..]);
            }
            _ if len > 0 => d.truncate(rng.below(len)),
            _ => {}
        }
    }
    d
}

fn files_under(dir: &Path, out: &mut Vec<Vec<u8>>, pick: &dyn Fn(&Path) -> bool) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out, pick);
        } else if pick(&p) {
            if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }
}

fn run(name: &str, f: fn(&[u8]), mut seeds: Vec<Vec<u8>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Regression inputs first (crashes found earlier).
    let mut regress = Vec::new();
    files_under(
        &root.join("tests/fixtures/fuzz").join(name),
        &mut regress,
        &|_| true,
    );
    for r in &regress {
        f(r);
    }
    seeds.extend(regress);
    seeds.push(Vec::new());
    let secs: u64 = std::env::var("TOLLGATE_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let mut n = 0u64;
    while Instant::now() < until {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, &seeds, base);
        let res = std::panic::catch_unwind(|| f(&input));
        if res.is_err() {
            let dir = root.join("target/fuzz-crashes").join(name);
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{n}"));
            let _ = std::fs::write(&path, &input);
            panic!("{name}: input {n} panicked; saved to {}", path.display());
        }
        n += 1;
    }
    println!(
        "{name}: {n} inputs in {secs} s, {} seeds, no panic",
        seeds.len()
    );
}

fn fixtures(pick: &dyn Fn(&Path) -> bool) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    files_under(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate"),
        &mut v,
        pick,
    );
    v
}

fn streams() -> Vec<Vec<u8>> {
    let mut v = fixtures(&|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        n.ends_with(".sse") || n.contains("upstream") || n.contains("stream")
    });
    v.push(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n".to_vec());
    v.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_vec());
    v.push(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"},{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":2}}\r\n\r\n".to_vec());
    v
}

#[test]
fn fuzz_config_parser() {
    let mut seeds = vec![
        include_bytes!("../conf/tollgate.yaml").to_vec(),
        include_bytes!("../proxy.yaml").to_vec(),
    ];
    seeds.push(b"providers:\n  x:\n    kind: openai\n    base_url: http://[::1]:9/v1\n    api_key: ${K:-d}\nlimits:\n  max_inflight: 1\n".to_vec());
    run("config", targets::config, seeds);
}

#[test]
fn fuzz_request_translation() {
    let seeds = fixtures(&|p| p.extension().is_some_and(|e| e == "json"));
    run("requests", targets::requests, seeds);
}

#[test]
fn fuzz_sse_parser() {
    run("sse", targets::sse, streams());
}

#[test]
fn fuzz_stream_transcoders() {
    run("transcoders", targets::transcoders, streams());
}
