//! `passthrough --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]`: the minimal
//! Pingora `ProxyHttp` (pick the peer, forward, nothing else). It is the ceiling tollgate is
//! measured against in benches/load/run.sh: same engine, no gateway logic.

use async_trait::async_trait;

// The same allocator as tollgate, so the comparison measures gateway logic, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut listen = "127.0.0.1:8100".to_string();
    let mut upstream = "127.0.0.1:8101".to_string();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--upstream" => upstream = args.next().expect("--upstream ADDR"),
            "--threads" => threads = args.next().expect("--threads N").parse().expect("number"),
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("passthrough-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: dir.join("upgrade.sock").display().to_string(),
        pid_file: dir.join("pid").display().to_string(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: upstream.parse().expect("upstream address"),
        },
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    println!("passthrough listening on {listen} -> {upstream}");
    server.run_forever()
}
