//! Why a proof could not be run: [`ProveError`], with the solver's
//! environment variable and install hint it names.
//!
//! Owns the error type every other module of the crate returns. It must
//! never know how a proof is run or what a report holds (a violated
//! invariant is a result, not an error).

use std::path::PathBuf;

use partnergate_policy::policies::LoadError;

/// The environment variable symcc reads for the path of the cvc5 executable.
pub const SOLVER_ENV: &str = "CVC5";
/// How to get the solver, printed when it is missing.
pub const INSTALL_HINT: &str =
    "install it with `apt-get install cvc5` (Debian/Ubuntu; 1.0.3 works), \
     or set CVC5 to the path of a cvc5 executable";

/// Why a proof could not be run (as opposed to an invariant being violated,
/// which is a result in the [`ProofReport`](crate::ProofReport)).
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The cvc5 executable does not exist.
    #[error("the SMT solver cvc5 was not found (looked for `{program}`{}): {INSTALL_HINT}",
        if *.from_env { " as given by $CVC5" } else { " on PATH" })]
    SolverMissing {
        /// The program looked for: `$CVC5`'s value, else `cvc5`.
        program: String,
        /// Whether `program` came from the `CVC5` environment variable.
        from_env: bool,
    },
    /// The solver exists but could not be started (or symcc refused it).
    #[error("cannot start the SMT solver `{program}`: {source}")]
    SolverStart {
        /// The program that was started.
        program: String,
        /// Why starting it failed.
        #[source]
        source: std::io::Error,
    },
    /// The pack has no schema; symbolic checking is defined per schema
    /// request environment.
    #[error("proving needs a schema: give --schema")]
    NoSchema,
    /// The invariants directory (given or `policies/invariants`) is absent.
    #[error(
        "no invariants directory {0}: put invariants (*.cedar) there or give --invariants DIR"
    )]
    NoInvariantsDir(PathBuf),
    /// An invariant file does not load (parse, validation or limits).
    #[error("invariant {}: {}", .file.display(), .source)]
    InvariantLoad {
        /// The invariant file.
        file: PathBuf,
        /// The load error, with its location in `file`.
        #[source]
        source: Box<LoadError>,
    },
    /// A policy of an invariant file has a missing, unknown or inconsistent
    /// `@kind` annotation.
    #[error("{}:{line}: policy `{policy}`: {message}", .file.display())]
    InvariantKindAnnotation {
        /// The invariant file.
        file: PathBuf,
        /// The 1-based line the policy starts on.
        line: usize,
        /// The policy's id (`@id`, else `policyN`).
        policy: String,
        /// What is wrong with the annotation.
        message: String,
    },
    /// Reading an invariant file or writing a counterexample file failed.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// symcc failed while compiling policies or running a query.
    #[error("{what} for {env}: {source}")]
    Symcc {
        /// The step that failed, e.g. `compiling the policies`.
        what: String,
        /// The request environment (`principal × action × resource`).
        env: String,
        /// symcc's error.
        #[source]
        source: Box<cedar_policy_symcc::err::Error>,
    },
    /// The solver's model could not be turned into a replayable request and
    /// entity store, or the replay could not be parsed.
    #[error("counterexample for {env}: {message}")]
    Counterexample {
        /// The request environment (`principal × action × resource`).
        env: String,
        /// What is missing or invalid.
        message: String,
    },
    /// The tokio runtime that drives the solver could not be built.
    #[error("cannot start the async runtime for the solver: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ProveError {
    /// The full human rendering (load errors with their source excerpts).
    pub fn render(&self) -> String {
        match self {
            ProveError::InvariantLoad { file, source } => {
                format!(
                    "{}error: in invariant file {}\n",
                    source.render(),
                    file.display()
                )
            }
            other => format!("error: {other}\n"),
        }
    }
}
