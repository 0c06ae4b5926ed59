//! Several deployments behind one model name: the order in which a request tries them
//! (priority first, then weight), a circuit breaker per deployment ([`breaker`]), and the
//! retry budget that bounds failover traffic ([`budget`]). The router builds the candidate
//! list; the gateway walks it (see `gateway::direct`).

pub mod breaker;
pub mod budget;
pub mod settings;

use rand::Rng;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Provider;
pub use breaker::{Health, Outcome};

/// One upstream that can serve a model: a provider (with this deployment's credential and
/// timeouts), the model name it is sent, and its health.
#[derive(Debug)]
pub struct Deployment {
    pub provider: Arc<Provider>,
    pub model: String,
    pub weight: u32,
    pub priority: u32,
    pub health: Arc<Health>,
}

/// The order in which one request tries `deps`: deployments whose breaker admits a request,
/// by priority (lowest first) and weighted-random within a priority; then the ejected ones,
/// soonest to recover first, as a last resort (a model is never refused without trying).
pub fn order<'a>(
    deps: &'a [Arc<Deployment>],
    now: Instant,
    rng: &mut impl Rng,
) -> Vec<&'a Arc<Deployment>> {
    let (mut up, mut down): (Vec<&Arc<Deployment>>, Vec<&Arc<Deployment>>) =
        deps.iter().partition(|d| d.health.available(now));
    up.sort_by_key(|d| d.priority);
    let mut out = Vec::with_capacity(deps.len());
    let mut i = 0;
    while i < up.len() {
        let j = i + up[i..]
            .iter()
            .take_while(|d| d.priority == up[i].priority)
            .count();
        weighted_shuffle(&mut up[i..j], rng);
        out.extend_from_slice(&up[i..j]);
        i = j;
    }
    down.sort_by_key(|d| d.health.open_until());
    out.extend(down);
    out
}

/// Orders `xs` so that each position is drawn by weight from those not yet placed.
fn weighted_shuffle(xs: &mut [&Arc<Deployment>], rng: &mut impl Rng) {
    for k in 0..xs.len().saturating_sub(1) {
        let total: u64 = xs[k..].iter().map(|d| d.weight as u64).sum();
        let mut pick = rng.gen_range(0..total);
        let mut chosen = k;
        for (n, d) in xs[k..].iter().enumerate() {
            if pick < d.weight as u64 {
                chosen = k + n;
                break;
            }
            pick -= d.weight as u64;
        }
        xs.swap(k, chosen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use rand::SeedableRng;

    fn deps(spec: &[(&str, u32, u32)]) -> Vec<Arc<Deployment>> {
        let cfg = Config::from_yaml_str(
            "providers:\n  p: {kind: openai, base_url: 'http://127.0.0.1:1/v1', api_key: k}\n",
            &|_| None,
        )
        .unwrap();
        let p = Arc::new(cfg.providers["p"].clone());
        spec.iter()
            .map(|(id, w, prio)| {
                Arc::new(Deployment {
                    provider: p.clone(),
                    model: "m".into(),
                    weight: *w,
                    priority: *prio,
                    health: Arc::new(Health::new(id, "p", Default::default())),
                })
            })
            .collect()
    }

    #[test]
    fn weights_share_first_picks_and_priorities_come_in_order() {
        let d = deps(&[("a", 3, 0), ("b", 1, 0), ("standby", 5, 1)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let now = Instant::now();
        let mut first_a = 0;
        for _ in 0..4000 {
            let o = order(&d, now, &mut rng);
            assert_eq!(o.len(), 3);
            assert_eq!(
                o[2].health.id, "standby",
                "priority 1 only after priority 0"
            );
            if o[0].health.id == "a" {
                first_a += 1;
            }
        }
        // 3:1 → 75% ± a few percent.
        assert!((2800..3200).contains(&first_a), "{first_a}");
    }

    #[test]
    fn ejected_deployments_go_last() {
        let d = deps(&[("a", 1, 0), ("b", 1, 0)]);
        let now = Instant::now();
        for _ in 0..5 {
            d[0].health.record(Outcome::Failed, now);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let o = order(&d, now, &mut rng);
            assert_eq!(o[0].health.id, "b");
            assert_eq!(o[1].health.id, "a", "still tried as a last resort");
        }
    }
}
