//! No built-in trust anchors: the only roots a TLS verifier gets are the ones configured
//! explicitly (for scanner-migrator: `DB_CA_BUNDLE` or the embedded RDS bundle).
#![no_std]

use pki_types::TrustAnchor;

/// Empty on purpose; see this crate's Cargo.toml.
pub const TLS_SERVER_ROOTS: &[TrustAnchor<'static>] = &[];
