//! The log on disk as one chain: which files make it up and their lines in
//! chain order (`files`), a line's chain fields (`link`), the entity slices
//! a file carries (`slices`), and [`verify`], which checks the chain and
//! classifies the first break (`verify`, reporting in `report`).
//!
//! Knows nothing of the writer's queue or thread.

mod files;
mod link;
mod report;
mod slices;
mod verify;

pub use crate::error::Location;
pub use files::{chain_files, rotated_numbers, rotated_path, tail, Line, LineReader, Tail};
pub use link::{parse_link, Link};
pub use report::{BreakKind, ChainBreak, GapFound, RetentionFound, VerifyReport};
pub use slices::FileSlices;
pub use verify::{verify, verify_until};
