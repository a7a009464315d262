//! The version of a pack: a content hash of its policy files (name and
//! text, in load order) and its schema, written `sha256:` + 16 hex digits.
//!
//! Owns the hash's input format; it must never know how the files are
//! read, limited or parsed.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The version hash, fed as the files are read.
#[derive(Default)]
pub(super) struct PackVersion(Sha256);

impl PackVersion {
    /// A policy file: its name, then its text.
    pub(super) fn policy_file(&mut self, file: &Path, text: &str) {
        self.0.update(
            file.file_name()
                .map_or(&b""[..], std::ffi::OsStr::as_encoded_bytes),
        );
        self.0.update([0]);
        self.0.update(text.as_bytes());
        self.0.update([0]);
    }

    /// The schema's text.
    pub(super) fn schema(&mut self, text: &str) {
        self.0.update(b"schema\0");
        self.0.update(text.as_bytes());
    }

    /// `sha256:` + the first 16 hex digits of the hash.
    pub(super) fn finish(self) -> String {
        format!("sha256:{}", &hex::encode(self.0.finalize())[..16])
    }
}
