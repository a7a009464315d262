//! Secrets the sidecar keeps in its data directory (the bearer token, the
//! search's page-token key): created once, readable by this user only
//! (mode 0600), never overwritten. Owns only that file discipline; knows
//! nothing of what the secret is for.

use std::io::Write;
use std::path::Path;

/// Write `contents` to a new file at `path` (its directory created if
/// missing), mode 0600, synced; an existing file is an error, never replaced.
pub fn create_private(path: &Path, contents: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}
