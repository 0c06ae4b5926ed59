//! `guardrail-mock --listen 127.0.0.1:PORT`: the mock guardrail service as a process, for the
//! real-client tests (`tests/clients/run.sh`).

use std::io::Write;

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            other => {
                eprintln!("guardrail-mock: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let server = mock_upstream::GuardrailMock::start_on(&listen)
        .await
        .expect("bind");
    println!("guardrail-mock listening on {}", server.addr);
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}
