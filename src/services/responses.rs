//! The response writer: stored Responses kept in memory by the requests that produced them
//! ([`crate::responses::Responses`]) go to the store in batches, a few milliseconds after
//! they were kept, off the request path. While the store cannot take them they stay kept
//! (and readable), and are written once it can.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

use super::writer::INTERVAL;
use crate::responses::Responses;

pub struct ResponseWriter {
    pub responses: Arc<Responses>,
}

#[async_trait]
impl BackgroundService for ResponseWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = self.responses.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
            if !self.responses.has_pending() {
                continue;
            }
            // Group commit, as the usage writer does.
            tokio::time::sleep(INTERVAL).await;
            self.responses.write_pending().await;
        }
    }
}
