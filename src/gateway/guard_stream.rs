//! Output checks on a streamed answer, and masked values restored in it (the direct path
//! carries every request with either, translated or not). The client's stream is split into events
//! ([`crate::guardrails::stream`]); its text is checked every window of characters and at
//! the end, by checks spawned beside the delivery: the stream does not wait for them, except
//! that its closing events wait for the end-of-stream verdict when a check may block, and
//! that with `hold_back` an event goes out only once a check covering its text passed.
//! One check runs at a time (the next one covers everything delivered by then).
//!
//! A blocking verdict cuts the stream with its grammar's refusal (a check that fails closed
//! without a verdict, with its error event); the upstream is closed, and the request is
//! billed for what the provider produced (as a broken stream is).
//!
//! Restoring comes last, on what goes to the client: the checks read the model's text (with
//! its placeholders), so that masked values never reach a guardrail service either.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::task::JoinSet;

use super::attempt::{Piece, Response, Target};
use super::{Ctx, Gateway};
use crate::error::{ErrorKind, GatewayError};
use crate::guardrails::restore::StreamRestore;
use crate::guardrails::stream::{Event, StreamWatch};
use crate::guardrails::{check, Decision, Stage, Verdict};
use crate::route::Route;
use crate::translate::Format;

/// How a watched stream ended.
enum End {
    /// Every event went out.
    Complete,
    /// A check stopped it: with the refusal, or (no verdict, failing closed) this error.
    Cut(Option<GatewayError>),
    /// The upstream failed mid-way: why, and the event that ends the client's stream.
    Failed(Box<Error>, Option<Bytes>),
    /// The client went away.
    Gone(Box<Error>),
}

/// The client's bytes, with the masked values restored when the request was masked.
fn restored(restore: &mut Option<StreamRestore>, b: Bytes, done: bool) -> Bytes {
    let Some(r) = restore.as_mut() else {
        return b;
    };
    let mut out = BytesMut::with_capacity(b.len() + 64);
    r.feed(&b, &mut out);
    if done {
        r.finish(&mut out);
    }
    out.freeze()
}

/// The client's response is an event stream (a stream asked for may still come back as
/// JSON: an error, or a provider that ignored `stream`).
pub(super) fn is_event_stream(resp: &pingora::http::ResponseHeader) -> bool {
    resp.headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

impl Gateway {
    /// Streams the answer (its header is written) under the request's output checks.
    pub(super) async fn deliver_watched(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        mut response: Response,
        target: &Target,
        route: &Route,
    ) -> Result<()> {
        let guard = ctx.guard.as_ref().expect("output checks or masked values");
        let plan = guard.stream_plan(self.state.guardrails.settings.output_window_chars);
        let checks_output = guard.checks_output();
        let entries = Arc::new(guard.entries.clone());
        let format = ctx.endpoint.format();
        let mut restore = guard.restore.clone().map(|m| StreamRestore::new(format, m));
        let mut watch = StreamWatch::new(format);
        let mut queue: VecDeque<Event> = VecDeque::new();
        let mut fresh: Vec<Event> = Vec::new();
        let mut checks: JoinSet<Vec<Verdict>> = JoinSet::new();
        // Characters of text covered by the check started last, and by one that passed.
        let (mut asked, mut passed) = (0usize, 0usize);
        let mut next_at = plan.window;
        let (mut upstream_done, mut sent_end) = (false, false);
        let keepalive = self.state.cfg.stream_keepalive;
        let idle = target.timeouts.stream_idle;
        let end = {
            let mut body = std::pin::pin!(response.body(
                target.deadline,
                idle,
                keepalive,
                &route.health,
                false
            ));
            loop {
                // What may go out now, in order.
                let all_passed = upstream_done && passed >= watch.chars() && checks.is_empty();
                let mut out = BytesMut::new();
                while let Some(ev) = queue.front() {
                    let held = (plan.hold_back && ev.text_end > passed)
                        || (ev.closing && plan.blocks && !all_passed);
                    if held {
                        break;
                    }
                    watch.delivered(ev);
                    out.extend_from_slice(&ev.bytes);
                    queue.pop_front();
                }
                let finished = upstream_done && queue.is_empty() && !sent_end;
                if !out.is_empty() || finished {
                    let out = restored(&mut restore, out.freeze(), finished);
                    if let Err(e) = s.write_response_body(Some(out), finished).await {
                        break End::Gone(e);
                    }
                    sent_end |= finished;
                }
                // The next check, when a window filled up or the answer is whole.
                let chars = watch.chars();
                if checks_output
                    && checks.is_empty()
                    && chars > asked
                    && (chars >= next_at || upstream_done)
                {
                    let state = self.state.clone();
                    let entries = entries.clone();
                    let text = watch.text().to_owned();
                    let rid = ctx.request_id.clone();
                    checks.spawn(async move {
                        let g = &state.guardrails;
                        check::run(g, &entries, Stage::Output, |_| text.as_str(), &rid).await
                    });
                    asked = chars;
                    next_at = chars + plan.window;
                }
                if sent_end && checks.is_empty() {
                    break End::Complete;
                }
                tokio::select! {
                    biased;
                    Some(joined) = checks.join_next() => {
                        let decision = match joined {
                            Ok(verdicts) => {
                                let d = check::decide(&verdicts);
                                if let Some(g) = ctx.guard.as_mut() {
                                    g.note_stream_verdicts(verdicts);
                                }
                                d
                            }
                            Err(e) => {
                                log::error!("request {}: an output check failed: {e}", ctx.request_id);
                                let e = GatewayError::new(ErrorKind::Internal, "An output check failed.");
                                if plan.blocks { Decision::Unavailable(e) } else { Decision::Pass }
                            }
                        };
                        match decision {
                            Decision::Pass => passed = asked,
                            // The client's stream has ended already: the verdict is noted.
                            _ if sent_end => {}
                            Decision::Blocked(_) => break End::Cut(None),
                            Decision::Unavailable(e) => break End::Cut(Some(e)),
                        }
                    }
                    piece = body.as_mut().next(), if !upstream_done => match piece {
                        Piece::Data(bytes, done) => {
                            if let Some(b) = bytes {
                                watch.feed(&b, &mut fresh);
                            }
                            if done {
                                watch.finish(&mut fresh);
                                upstream_done = true;
                            }
                            queue.extend(fresh.drain(..));
                        }
                        Piece::KeepAlive(ping) => {
                            watch.keepalive_sent(&ping);
                            // (Numbered events go through the restorer, which numbers again.)
                            let ping = if format == Format::Responses {
                                restored(&mut restore, ping, false)
                            } else {
                                ping
                            };
                            if let Err(e) = s.write_response_body(Some(ping), false).await {
                                break End::Gone(e);
                            }
                        }
                        Piece::Failed(e, last) => break End::Failed(e, last),
                    },
                    r = s.as_downstream_mut().read_body_or_idle(true) => {
                        break End::Gone(r.err().unwrap_or_else(|| Error::new(ErrorType::ConnectionClosed)));
                    }
                }
            }
        };
        match end {
            End::Complete => {
                ctx.tap = Some(response.release(&self.state.connector, &target.peer).await);
                Ok(())
            }
            End::Cut(failure) => {
                // The provider stops here; what it produced so far is billed.
                response.shutdown().await;
                let mut tap = response.into_tap();
                tap.produced_deltas(watch.deltas());
                let reported = tap.reported_usage().map_or(0, |u| u.output);
                let produced = tap.delivered_output(reported).unwrap_or(reported);
                let ending = match &failure {
                    None => watch.refusal(produced),
                    Some(e) => watch.failure(e),
                };
                let ending = restored(&mut restore, ending, true);
                ctx.tap = Some(tap);
                log::info!(
                    "request {}: the stream was cut by guardrail policy ({})",
                    ctx.request_id,
                    if failure.is_some() {
                        "no verdict"
                    } else {
                        "flagged"
                    }
                );
                if let Err(e) = s.write_response_body(Some(ending), true).await {
                    ctx.client_gone = true;
                    return Err(e.into_down());
                }
                Ok(())
            }
            End::Failed(e, last) => {
                // Held-back events never went out: the tap's ending may describe them, the
                // watch's does not.
                let ending = if queue.is_empty() {
                    last
                } else {
                    let why = GatewayError::new(ErrorKind::Upstream, "upstream stream failed");
                    (!watch.ended()).then(|| watch.failure(&why))
                };
                if let Some(ev) = ending {
                    let ev = restored(&mut restore, ev, true);
                    let _ = s.write_response_body(Some(ev), true).await;
                }
                ctx.tap = Some(response.into_tap());
                Err(e)
            }
            End::Gone(e) => {
                ctx.client_gone = true;
                response.shutdown().await;
                ctx.tap = Some(response.into_tap());
                Err(e.into_down())
            }
        }
    }
}
