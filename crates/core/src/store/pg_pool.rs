//! The store's PostgreSQL connections: up to [`POOL_SIZE`] of them, made
//! when needed and kept while they work, so that the writes of different
//! accounts (and the decision log's shipping) run at once instead of
//! taking turns on one connection. A caller waits for a free connection
//! when all are in use; a connection that broke is dropped, and the next
//! caller makes a new one.
//!
//! It must never know the tables, the locks or what a caller runs.

use std::sync::{Condvar, Mutex};

use postgres::Client;

use super::pg_feed::connect;
use super::StoreError;

/// The most connections one store keeps (one per write in flight): as many
/// as the writes one replica runs at once.
pub const POOL_SIZE: usize = 8;

/// The connections of one store.
pub(super) struct Pool {
    url: String,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Client>,
    /// Connections made and not dropped (idle or lent).
    open: usize,
}

/// A lent connection: back to the pool by [`Lease::give_back`], dropped
/// (and counted out) otherwise, a panic included.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Pool {
    /// A pool for `url`, holding `first` (the connection that migrated).
    pub(super) fn new(url: &str, first: Client) -> Self {
        Pool {
            url: url.to_string(),
            state: Mutex::new(State {
                idle: vec![first],
                open: 1,
            }),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live connection: an idle one, a new one while fewer than
    /// [`POOL_SIZE`] are open, or the next one given back.
    pub(super) fn take(&self) -> Result<Lease<'_>, StoreError> {
        let mut st = self.state();
        loop {
            while let Some(c) = st.idle.pop() {
                if c.is_closed() {
                    st.open -= 1;
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    client: Some(c),
                });
            }
            if st.open < POOL_SIZE {
                st.open += 1;
                drop(st);
                return match connect(&self.url) {
                    Ok(c) => Ok(Lease {
                        pool: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        self.state().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Every idle connection, out of the pool (to close them).
    pub(super) fn drain(&self) -> Vec<Client> {
        let mut st = self.state();
        let idle = std::mem::take(&mut st.idle);
        st.open -= idle.len();
        idle
    }
}

impl Lease<'_> {
    /// The connection.
    pub(super) fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// Back to the pool, for the next caller.
    pub(super) fn give_back(mut self) {
        if let Some(c) = self.client.take() {
            self.pool.state().idle.push(c);
            self.pool.freed.notify_one();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.client.take().is_some() {
            self.pool.state().open -= 1;
            self.pool.freed.notify_one();
        }
    }
}
