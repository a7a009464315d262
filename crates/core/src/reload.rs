//! The live policy pack and its hot reload.
//!
//! [`Evaluator`] owns the current [`PolicyPack`] behind an atomic pointer
//! (`ArcSwap`): a request takes a snapshot without waiting, and a reload
//! swaps in a fully built, validated pack or nothing at all — a bad edit
//! never replaces the last good set. [`watch`] turns file-system events on
//! the policies directory and the schema into reloads; it survives I/O
//! errors (logs and keeps watching) and stops when its handle is dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use serde::Serialize;

use crate::policies::{self, LoadError, PackSource, PolicyPack, Problem};

/// How long file events are gathered before one reload runs.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A check a new pack must pass before it may serve (e.g. proofs of the
/// invariants, or a rules file read beside the policies). It is pure: it
/// returns the problems that reject the pack, or optionally a value built
/// from its own inputs (e.g. the parsed quotas), which becomes part of the
/// new pack ([`PolicyPack::extension`]) and so serves exactly when the pack
/// does. A gate never changes anything itself.
pub type Gate =
    Box<dyn Fn(&PolicyPack) -> Result<Option<policies::Extension>, Vec<Problem>> + Send + Sync>;

/// Told about every reload attempt: the pack now serving, and the error if
/// the attempt failed (the pack is then the previous one).
pub type Listener = Box<dyn Fn(&PolicyPack, Option<&LoadError>) + Send + Sync>;

/// A reload that failed and was not applied.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    /// When the reload was attempted (RFC 3339).
    pub at: String,
    /// The load error, as one line.
    pub message: String,
    /// The located problems behind it ([`LoadError::problems`]).
    pub problems: Vec<Problem>,
}

/// What `GET /v1/policies` and the metrics report about reloads.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// When the serving pack was loaded (RFC 3339).
    pub loaded_at: String,
    /// The same instant in seconds since the Unix epoch (for the metrics).
    pub loaded_at_unix: f64,
    /// Packs loaded since start, the first load included.
    pub successes: u64,
    /// Reload attempts that failed since start (the previous pack kept serving).
    pub failures: u64,
    /// The last failed reload, until a good one succeeds.
    pub last_error: Option<ReloadFailure>,
}

/// The serving policy pack, swapped atomically on reload.
pub struct Evaluator {
    source: PackSource,
    current: ArcSwap<PolicyPack>,
    status: ArcSwap<ReloadStatus>,
    /// One reload at a time (the watcher, SIGHUP and the API may race).
    reloading: Mutex<()>,
    gates: Vec<Gate>,
    generation: tokio::sync::watch::Sender<u64>,
    listeners: Mutex<Vec<Listener>>,
    /// Files or directories read by the gates (e.g. `quotas.toml`, the
    /// invariants): part of what "the content changed" means.
    extra_inputs: Vec<PathBuf>,
    /// The content digest of every input at the last reload attempt (good
    /// or bad): a watcher event whose files hash the same is not a change.
    last_digest: Mutex<Option<Digest>>,
    /// What the loads so far made of each file: a reload parses and
    /// validates only the files whose text changed.
    cache: Mutex<policies::LoadCache>,
    /// Reload every file from scratch (no cache): the same packs, slower;
    /// kept to compare the two and as a way out.
    full_reloads: std::sync::atomic::AtomicBool,
}

/// SHA-256 over the names and bytes of every file a reload reads.
type Digest = [u8; 32];

impl Evaluator {
    /// Load the pack once; fails if the first load fails.
    pub fn load(source: PackSource) -> Result<Self, LoadError> {
        Self::load_with_gates(source, Vec::new())
    }

    /// Load with gates that every pack, the first included, must pass.
    pub fn load_with_gates(source: PackSource, gates: Vec<Gate>) -> Result<Self, LoadError> {
        Self::load_with_inputs(source, gates, Vec::new())
    }

    /// Load with gates, and with the files or directories the gates read
    /// (e.g. `quotas.toml`, the invariants) counted as inputs:
    /// [`Evaluator::reload_if_changed`] compares their content too.
    pub fn load_with_inputs(
        source: PackSource,
        gates: Vec<Gate>,
        extra_inputs: Vec<PathBuf>,
    ) -> Result<Self, LoadError> {
        // Taken before reading: an edit during the load is seen as a change.
        let first_digest = digest(&source, &extra_inputs);
        let mut cache = policies::LoadCache::default();
        let pack = run_gates(&gates, policies::load_reusing(&source, &mut cache)?)?;
        let now = SystemTime::now();
        let (generation, _) = tokio::sync::watch::channel(0);
        Ok(Evaluator {
            source,
            current: ArcSwap::from_pointee(pack),
            status: ArcSwap::from_pointee(ReloadStatus {
                loaded_at: rfc3339(now),
                loaded_at_unix: unix(now),
                successes: 1,
                failures: 0,
                last_error: None,
            }),
            reloading: Mutex::new(()),
            gates,
            generation,
            listeners: Mutex::new(Vec::new()),
            extra_inputs,
            last_digest: Mutex::new(Some(first_digest)),
            cache: Mutex::new(cache),
            full_reloads: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Reload every file from scratch (`true`) or only the files whose text
    /// changed (`false`, the default). Both give the same pack; a full
    /// reload takes as long as the first load.
    pub fn set_full_reloads(&self, full: bool) {
        self.full_reloads
            .store(full, std::sync::atomic::Ordering::Relaxed);
    }

    /// The content digest of every input now.
    fn digest(&self) -> Digest {
        digest(&self.source, &self.extra_inputs)
    }

    /// Reload only when the content of some input differs from the last
    /// attempt's (what the watcher calls: an event that changed nothing —
    /// a `touch`, an editor's save of the same bytes — reloads nothing and
    /// logs no reload record). `None` when skipped.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<PolicyPack>, LoadError>> {
        let guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.digest();
        let last = *self.last_digest.lock().unwrap_or_else(|p| p.into_inner());
        if last == Some(now) {
            metrics::counter!("partnergate_reloads_skipped_total").increment(1);
            tracing::debug!("policy files changed on disk but their content did not; no reload");
            return None;
        }
        Some(self.reload_locked(&guard, now))
    }

    /// The serving pack (a cheap, consistent snapshot).
    pub fn current(&self) -> Arc<PolicyPack> {
        self.current.load_full()
    }

    /// The reload counters and the last failure (a snapshot).
    pub fn status(&self) -> Arc<ReloadStatus> {
        self.status.load_full()
    }

    /// Where the pack is loaded from (policies, schema, limits).
    pub fn source(&self) -> &PackSource {
        &self.source
    }

    /// Call `f` after every reload attempt (e.g. to log it).
    pub fn on_reload(&self, f: Listener) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// A receiver that changes on every reload attempt (good or bad).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-read everything; swap only if the new pack loads, validates and
    /// passes every gate. Returns the new pack, or the error that kept the
    /// old one serving.
    pub fn reload(&self) -> Result<Arc<PolicyPack>, LoadError> {
        let guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.digest();
        self.reload_locked(&guard, now)
    }

    /// [`Evaluator::reload`] under the reload lock (the guard proves it is
    /// held), from the inputs' digest `before` the first load.
    fn reload_locked(
        &self,
        _reloading: &std::sync::MutexGuard<'_, ()>,
        mut before: Digest,
    ) -> Result<Arc<PolicyPack>, LoadError> {
        let started = std::time::Instant::now();
        // A file may change while it is read (an editor truncating, then
        // writing): load until the files are the same before and after
        // (each attempt's "after" is the next one's "before"). Only the
        // load repeats; the gates (a proof may take seconds) run once, on
        // the settled pack. An edit during the gates is a change after this
        // attempt: its event reloads again.
        let mut attempts = 0;
        let full = self.full_reloads.load(std::sync::atomic::Ordering::Relaxed);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = loop {
            attempts += 1;
            let loaded = if full {
                policies::load(&self.source)
            } else {
                policies::load_reusing(&self.source, &mut cache)
            };
            let after = self.digest();
            if after == before || attempts >= 5 {
                *self.last_digest.lock().unwrap_or_else(|p| p.into_inner()) = Some(after);
                break loaded;
            }
            tracing::debug!(
                attempts,
                "policy files changed while loading; loading again"
            );
            before = after;
        };
        let result = loaded.and_then(|pack| run_gates(&self.gates, pack));
        let now = SystemTime::now();
        let old = self.status.load_full();
        let outcome = match result {
            Ok(pack) => {
                let pack = Arc::new(pack);
                let changed = pack.version != self.current.load().version;
                self.current.store(pack.clone());
                self.status.store(Arc::new(ReloadStatus {
                    loaded_at: rfc3339(now),
                    loaded_at_unix: unix(now),
                    successes: old.successes + 1,
                    failures: old.failures,
                    last_error: None,
                }));
                metrics::counter!("partnergate_reloads_total", "result" => "success").increment(1);
                metrics::gauge!("partnergate_last_good_reload_timestamp_seconds").set(unix(now));
                tracing::info!(version = %pack.version, changed, policies = pack.policies.len(),
                    parsed_files = if full { pack.files.len() } else { cache.parsed_last() },
                    ms = started.elapsed().as_millis() as u64, "policies reloaded");
                Ok(pack)
            }
            Err(e) => {
                self.status.store(Arc::new(ReloadStatus {
                    failures: old.failures + 1,
                    last_error: Some(ReloadFailure {
                        at: rfc3339(now),
                        message: e.to_string(),
                        problems: e.problems(),
                    }),
                    ..(*old).clone()
                }));
                metrics::counter!("partnergate_reloads_total", "result" => "failure").increment(1);
                let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
                tracing::error!(error = %e, problems = ?problems,
                    "policy reload rejected; the last good version keeps serving");
                Err(e)
            }
        };
        {
            let serving = self.current.load_full();
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            for l in listeners.iter() {
                l(&serving, outcome.as_ref().err());
            }
        }
        self.generation.send_modify(|g| *g += 1);
        outcome
    }
}

/// Run every gate on `pack`; the values they return join the pack. The
/// first rejection rejects the pack (and nothing of it is kept).
fn run_gates(gates: &[Gate], mut pack: PolicyPack) -> Result<PolicyPack, LoadError> {
    let mut values = Vec::new();
    for gate in gates {
        if let Some(v) = gate(&pack).map_err(|problems| LoadError::Rejected { problems })? {
            values.push(v);
        }
    }
    for v in values {
        pack.add_extension(v);
    }
    Ok(pack)
}

/// Stops the watcher when dropped.
pub struct WatchHandle {
    debouncer: SharedDebouncer,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Tells the reload thread to skip whatever is still queued.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

type SharedDebouncer = Arc<Mutex<Option<Debouncer>>>;

impl WatchHandle {
    /// Stop watching and wait for the reload thread to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let taken = self
            .debouncer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(d) = taken {
            d.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {message}")]
pub struct WatchError {
    /// The file or directory that could not be watched.
    pub path: PathBuf,
    /// The watcher's error.
    pub message: String,
}

/// Watch the policies (directory or file), the schema and any `extra` files
/// (e.g. a rules file), and reload `evaluator` on every change. The watch is
/// placed on the parent directories too, so rename-saves, deletions and a
/// re-created policies directory are all seen.
pub fn watch(evaluator: Arc<Evaluator>, extra: Vec<PathBuf>) -> Result<WatchHandle, WatchError> {
    let watched = Watched::new(evaluator.source(), &extra);
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let debouncer = start_debouncer(&watched, tx)?;
    let shared: SharedDebouncer = Arc::new(Mutex::new(Some(debouncer)));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let policies_path = watched.policies.clone();
    let reloader = Reloader {
        evaluator,
        watched,
        rearm: shared.clone(),
        stopping: stopping.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("partnergate-watch".into())
        .stack_size(crate::prescan::POLICY_THREAD_STACK)
        .spawn(move || reloader.run(&rx))
        .map_err(|e| WatchError {
            path: policies_path,
            message: e.to_string(),
        })?;
    Ok(WatchHandle {
        debouncer: shared,
        thread: Some(thread),
        stopping,
    })
}

/// What a watcher looks at, as absolute paths.
struct Watched {
    /// The policy directory (or file).
    policies: PathBuf,
    /// Whether the policies were a directory when the watch started.
    policies_is_dir: bool,
    /// Single files: the schema and extra files (watched through their parents).
    files: Vec<PathBuf>,
    /// Extra directories (e.g. invariants), watched themselves.
    extra_dirs: Vec<PathBuf>,
}

impl Watched {
    /// The paths of `source` and the `extra` inputs.
    fn new(source: &PackSource, extra: &[PathBuf]) -> Self {
        let policies = absolute(&source.policies);
        let (extra_dirs, mut files): (Vec<PathBuf>, Vec<PathBuf>) =
            extra.iter().map(|p| absolute(p)).partition(|p| p.is_dir());
        if let Some(s) = &source.schema {
            files.push(absolute(s));
        }
        Watched {
            policies_is_dir: policies.is_dir(),
            policies,
            files,
            extra_dirs,
        }
    }

    /// The directories to watch non-recursively: the files' parents, the
    /// policies' parent and the extra directories.
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        if let Some(parent) = self.policies.parent() {
            dirs.push(parent.to_path_buf());
        }
        dirs.extend(self.extra_dirs.iter().cloned());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether an event on `p` (absolute) concerns an input.
    fn is_relevant(&self, p: &Path) -> bool {
        p.starts_with(&self.policies)
            || self.files.iter().any(|f| p == f)
            || self.extra_dirs.iter().any(|d| p.starts_with(d))
    }
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// A debouncer sending to `tx`, watching every directory of `watched` (and
/// the policy directory itself).
fn start_debouncer(
    watched: &Watched,
    tx: std::sync::mpsc::Sender<DebounceEventResult>,
) -> Result<Debouncer, WatchError> {
    let mut debouncer = new_debouncer(DEBOUNCE, None, tx).map_err(|e| WatchError {
        path: watched.policies.clone(),
        message: e.to_string(),
    })?;
    let mut dirs = watched.directories();
    if watched.policies_is_dir {
        dirs.push(watched.policies.clone());
    }
    for d in &dirs {
        debouncer
            .watch(d, RecursiveMode::NonRecursive)
            .map_err(|e| WatchError {
                path: d.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(debouncer)
}

/// The watcher thread's state: turns debounced events into reloads.
struct Reloader {
    evaluator: Arc<Evaluator>,
    watched: Watched,
    /// The debouncer, to re-watch a re-created policy directory.
    rearm: SharedDebouncer,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Reloader {
    /// Reload on every relevant event until the debouncer (the sender) is
    /// dropped or the handle stops: no spinning.
    fn run(&self, rx: &std::sync::mpsc::Receiver<DebounceEventResult>) {
        while let Ok(result) = rx.recv() {
            // On shutdown, events still queued are dropped, not reloaded.
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            match result {
                Ok(events) => self.on_events(&events),
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "file watcher error; still watching");
                    }
                    // An error may mean lost events: look at the content.
                    let _ = self.evaluator.reload_if_changed();
                }
            }
        }
        tracing::debug!("policy watcher stopped");
    }

    /// Reload if some event can have changed an input's content.
    fn on_events(&self, events: &[notify_debouncer_full::DebouncedEvent]) {
        let hit = events.iter().any(|ev| {
            changes_content(&ev.event.kind)
                && ev
                    .event
                    .paths
                    .iter()
                    .any(|p| self.watched.is_relevant(&absolute(p)))
        });
        if !hit {
            return;
        }
        // A deleted and re-created policies directory needs a new watch (the
        // parent's saw it return).
        let policies = &self.watched.policies;
        if self.watched.policies_is_dir && policies.is_dir() {
            if let Some(d) = self
                .rearm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                let _ = d.watch(policies, RecursiveMode::NonRecursive);
            }
        }
        let _ = self.evaluator.reload_if_changed();
    }
}

/// The content digest of every file a reload reads: the policy files, the
/// schema and the extra inputs (a directory stands for its files). A file
/// that cannot be read hashes as missing, so its return is a change.
fn digest(source: &PackSource, extra: &[PathBuf]) -> Digest {
    use sha2::Digest as _;
    let mut files = policies::policy_files(&source.policies).unwrap_or_default();
    files.extend(source.schema.iter().cloned());
    for p in extra {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            inner.retain(|f| f.is_file());
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    let mut hasher = sha2::Sha256::new();
    for f in &files {
        hasher.update(f.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        match std::fs::File::open(f) {
            Ok(mut file) => {
                let mut sink = HashWriter(&mut hasher);
                if std::io::copy(&mut file, &mut sink).is_err() {
                    hasher.update(b"\0unreadable");
                }
                hasher.update([1]);
            }
            Err(_) => hasher.update(b"\0missing"),
        }
    }
    hasher.finalize().into()
}

/// Feeds `std::io::copy` into a hasher without buffering the file.
struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a file-system event can change what a reload reads: creation,
/// data written, renames and removals. Reads (open, access, close after
/// reading) and metadata changes (a `touch`, `chmod`) are not — reacting
/// to them made every reload, which reads the files, trigger the next.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{}", unix(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pack_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.cedar"),
            "permit (principal, action, resource);\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn an_edit_during_a_slow_gate_does_not_run_the_gate_again_in_the_same_reload() {
        let dir = pack_dir();
        let file = dir.path().join("a.cedar");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let gate: Gate = Box::new(move |_| {
            // The first run is the initial load; every later run edits a
            // file, as an author saving during a proof would.
            let n = counted.fetch_add(1, Ordering::SeqCst);
            if n > 0 {
                let text = format!("permit (principal, action, resource);\n// edit {n}\n");
                std::fs::write(&file, text).unwrap();
            }
            Ok(None)
        });
        let ev = Evaluator::load_with_gates(PackSource::new(dir.path(), None), vec![gate]).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        ev.reload().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one gate run per reload");
        // The edit made during the gate is a change the next look sees.
        assert!(ev.reload_if_changed().is_some());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_reload_serves_the_last_of_two_quick_writes_as_a_full_load_would() {
        let dir = pack_dir();
        std::fs::write(
            dir.path().join("b.cedar"),
            "@id(\"b\") forbid (principal, action, resource);\n",
        )
        .unwrap();
        let source = PackSource::new(dir.path(), None);
        let ev = Evaluator::load(source.clone()).unwrap();
        let file = dir.path().join("a.cedar");
        std::fs::write(
            &file,
            "@id(\"first\") permit (principal, action, resource);\n",
        )
        .unwrap();
        std::fs::write(
            &file,
            "permit (principal, action, resource);\npermit (principal, action, resource);\n",
        )
        .unwrap();
        let served = ev.reload_if_changed().unwrap().unwrap();
        let full = policies::load(&source).unwrap();
        assert_eq!(served.version, full.version);
        assert_eq!(served.policies, full.policies);
        let ids: Vec<&str> = served.policies.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["policy0", "policy1", "b"]);
        // The same with every file reloaded from scratch.
        ev.set_full_reloads(true);
        std::fs::write(&file, "forbid (principal, action, resource);\n").unwrap();
        let served = ev.reload_if_changed().unwrap().unwrap();
        assert_eq!(served.version, policies::load(&source).unwrap().version);
    }

    #[test]
    fn a_reload_of_unchanged_content_is_skipped_and_a_change_is_not() {
        let dir = pack_dir();
        let ev = Evaluator::load(PackSource::new(dir.path(), None)).unwrap();
        assert!(
            ev.reload_if_changed().is_none(),
            "nothing changed since the load"
        );
        let file = dir.path().join("a.cedar");
        let text = std::fs::read(&file).unwrap();
        std::fs::write(&file, &text).unwrap();
        assert!(ev.reload_if_changed().is_none(), "same bytes saved again");
        std::fs::write(&file, "forbid (principal, action, resource);\n").unwrap();
        assert!(ev.reload_if_changed().is_some());
        assert_eq!(ev.status().successes, 2);
        // A bad edit is attempted once, not again on every event.
        std::fs::write(&file, "permt (principal, action, resource);\n").unwrap();
        assert!(ev.reload_if_changed().unwrap().is_err());
        assert!(ev.reload_if_changed().is_none());
        assert_eq!(ev.status().failures, 1);
    }
}
