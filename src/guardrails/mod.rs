//! Guardrails: checks of prompts and answers. `local` holds the built-in checks that need no
//! service.

pub mod local;
