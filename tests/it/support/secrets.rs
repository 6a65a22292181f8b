//! Every password the suite uses is registered here; every output any test captures is checked
//! against all of them.

use std::sync::Mutex;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers a password that must never be printed.
pub fn register(secret: &str) {
    SECRETS.lock().unwrap().push(secret.to_string());
}

/// Panics if any registered password appears in `text`.
pub fn assert_absent(what: &str, text: &str) {
    for secret in SECRETS.lock().unwrap().iter() {
        assert!(!text.contains(secret.as_str()), "a password appeared in {what}:\n{text}");
    }
}
