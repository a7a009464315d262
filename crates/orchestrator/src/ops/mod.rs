//! The orchestrator's operations, one file per idea, each an `impl` of
//! [`crate::Orchestrator`] (reads) or [`crate::ScopedWrites`] (writes): the
//! partner seat's question and counting rules (`seat`), invitations
//! (`invite`), access requests a partner makes and an administrator
//! answers (`request`) and their codes (`request_code`), partner access (`partner`), its suspension (`suspend`), a
//! user's membership (`membership`),
//! the registry (`registry`), the listings (`listing`), the system's own
//! writes the sweep runs (`upkeep`) and its "access ending soon" events
//! (`ending`). It never knows HTTP or the command line.

mod ending;
mod invite;
mod listing;
mod membership;
mod partner;
mod registry;
mod request;
mod request_code;
mod seat;
mod suspend;
mod upkeep;

pub use ending::DEFAULT_ENDING_SOON;
