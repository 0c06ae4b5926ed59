//! `mock-upstream --listen 127.0.0.1:PORT [--log FILE] [--search-listen ADDR] [--sandbox-listen
//! ADDR]`: the mock provider as a process (with the mock search backend and the reference
//! sandbox when asked), for the acceptance scripts and benchmarks.

use std::io::Write;

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut log = None;
    let mut search = None;
    let mut sandbox = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--log" => log = Some(args.next().expect("--log FILE")),
            "--search-listen" => search = Some(args.next().expect("--search-listen ADDR")),
            "--sandbox-listen" => sandbox = Some(args.next().expect("--sandbox-listen ADDR")),
            other => {
                eprintln!("mock-upstream: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let file = log.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open log")
    });
    let server = mock_upstream::MockServer::start_with_log(&listen, file)
        .await
        .expect("bind");
    // The tool backends, when asked for: their addresses are printed first.
    let _search = match search {
        Some(a) => {
            let s = mock_upstream::SearchServer::start_on(&a)
                .await
                .expect("bind search");
            println!("mock search listening on {}", s.addr());
            Some(s)
        }
        None => None,
    };
    let _sandbox = match sandbox {
        Some(a) => {
            let s = mock_upstream::SandboxServer::start_on(&a)
                .await
                .expect("bind sandbox");
            println!(
                "mock sandbox listening on {}",
                s.url().trim_start_matches("http://")
            );
            Some(s)
        }
        None => None,
    };
    println!("mock-upstream listening on {}", server.addr);
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}
