//! Named console admins, for teams that do not want to share the master key: a name and an
//! Argon2id password hash (a PHC string), created by `tollgate admins set NAME`, which hashes
//! the password itself, so that only the hash ever reaches the gateway. Kept in the store's
//! meta table (`console_admins`, a JSON object of name → hash) and read at each login.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use std::collections::BTreeMap;

use crate::store::Store;

/// The meta entry holding every admin.
pub const META: &str = "console_admins";

/// An Argon2id hash of `password` with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `phc` is an Argon2 hash this gateway can check.
pub fn valid_hash(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// Checks a password against a PHC string (slow on purpose: run it off the request thread).
pub fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The hash of a random password that was thrown away (the default parameters), checked
/// for unknown names so that a wrong name takes as long as a wrong password.
pub const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$w9xKZVaOp38EpyHSCQZFWg$LRa/7at0HiSfQQ5h1y8OLAH/eAr0k9AeJROHn3mnQVs";

/// Names: 1 to 64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// Every admin: name → hash.
pub async fn load(store: &dyn Store) -> Result<BTreeMap<String, String>, String> {
    match store.get_meta(META).await.map_err(|e| e.to_string())? {
        None => Ok(BTreeMap::new()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| format!("{META}: {e}")),
    }
}

pub async fn save(store: &dyn Store, all: &BTreeMap<String, String>) -> Result<(), String> {
    let bytes = serde_json::to_vec(all).map_err(|e| e.to_string())?;
    store
        .put_meta(META, &bytes)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(valid_hash(&a));
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "wrong"));
        assert!(!verify("not a hash", "x"));
        assert!(!valid_hash("$pbkdf2-sha256$i=1$c2FsdA$aGFzaA"));
        assert!(valid_hash(DUMMY));
        assert!(valid_name("alice@example.com"));
        assert!(!valid_name("<b>"));
        assert!(!valid_name(""));
    }
}
