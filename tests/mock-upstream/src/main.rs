//! `mock-upstream --listen 127.0.0.1:PORT [--log FILE]`: the mock provider as a process, for
//! the acceptance scripts and benchmarks.

use std::io::Write;

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut log = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--log" => log = Some(args.next().expect("--log FILE")),
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
    println!("mock-upstream listening on {}", server.addr);
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}
