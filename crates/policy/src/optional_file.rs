//! A file a pack may carry beside its policies (the gateway's routes, the
//! partner quotas): read when it is there, `None` when it is not, any other
//! failure a [`Problem`] naming the file.
//!
//! Owns how such a file is read and how a read failure is reported; it must
//! never know what the file holds or what its absence means.

use std::path::Path;

use crate::problem::Problem;

/// The text of the file at `path`, or `None` when there is no such file; a
/// file that exists but cannot be read is a problem naming it.
pub fn read(path: &Path) -> Result<Option<String>, Box<Problem>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Box::new(Problem {
            file: Some(path.to_path_buf()),
            line: None,
            column: None,
            policy_id: None,
            message: format!("cannot read: {e}"),
            rendered: format!("{}: cannot read: {e}", path.display()),
        })),
    }
}
