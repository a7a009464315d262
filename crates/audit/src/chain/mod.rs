//! The log on disk as one chain: which files make it up and their lines in
//! chain order (`files`), a line's chain fields (`link`), the entity slices
//! a file carries (`slices`), and [`verify`], which checks the chain and
//! classifies the first break (`verify`, reporting in `report`; over any
//! source of lines, [`Lines`], so records read back from a database are
//! checked by the same code), and the records after a given seq, for a
//! shipper that copies the log elsewhere (`after`).
//!
//! Knows nothing of the writer's queue or thread.

mod after;
mod files;
mod link;
mod report;
mod slices;
mod verify;

pub use crate::error::Location;
pub use after::{newest_seq, After, Shippable};
pub use files::{chain_files, rotated_numbers, rotated_path, tail, Line, LineReader, Lines, Tail};
pub use link::{parse_link, Link};
pub use report::{BreakKind, ChainBreak, GapFound, RetentionFound, VerifyReport};
pub use slices::FileSlices;
pub use verify::{verify, verify_lines, verify_lines_from, verify_until};
