//! Tests that need something from outside the repository (a PostgreSQL server, a tool) skip
//! when it is missing, loudly: the SKIPPED line goes straight to stderr, past the test
//! harness's capture, so it shows in every run. With `TOLLGATE_NO_SKIP=1` (tests/run.sh sets
//! it, as it provides them all) a missing one fails the test instead.

use std::io::Write;

/// Reports that the running test cannot run because `what` is missing: a SKIPPED line, or a
/// panic under `TOLLGATE_NO_SKIP`. The caller returns early after it.
pub fn skip(what: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if std::env::var_os("TOLLGATE_NO_SKIP").is_some() {
        panic!("{test} cannot run: {what} (TOLLGATE_NO_SKIP is set, so it may not skip)");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what}");
}

/// The environment variable `name`, or None after [`skip`] (with `hint` on where it comes from).
pub fn need_env(name: &str, hint: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) => {
            skip(&format!("{name} is not set ({hint})"));
            None
        }
    }
}

/// The shared-store tests' PostgreSQL URL, `TOLLGATE_TEST_PG_URL`.
pub fn pg_url() -> Option<String> {
    need_env(
        "TOLLGATE_TEST_PG_URL",
        "tests/run.sh starts a PostgreSQL and sets it",
    )
}
