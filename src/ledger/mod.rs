//! Budgets and rate limits: reserve before the call, settle after it.

pub mod budget;
pub mod entities;
pub mod period;
pub mod rate;
