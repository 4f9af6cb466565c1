//! The guest side of the WIT contract, one module per world, generated ahead of
//! time from `wit/` by `scripts/generate-bindings` (so no plugin builds the bindings
//! generator). Each export macro of the SDK wires a plugin type into exactly one of
//! them; the other world's export glue is never instantiated.

pub mod auth;
pub mod strategy;
