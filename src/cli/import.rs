//! `partnergate import`: bulk-load a file of Cedar entity JSON into the
//! store of a data directory, validated against the schema.
//!
//! Owns the `import` command only; it must never know another command.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use partnergate_policy::policies;

use super::common::{CliError, DEFAULT_SCHEMA, EXIT_ERROR, EXIT_OK};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The data directory whose store receives the entities.
    #[arg(long, env = "PARTNERGATE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Validate every entity against this schema.
    #[arg(long, env = "PARTNERGATE_SCHEMA", default_value = DEFAULT_SCHEMA)]
    pub schema: PathBuf,
    /// A file of Cedar entity JSON (an array).
    pub file: PathBuf,
}

/// `partnergate import`.
pub fn run_import(
    a: &ImportArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CliError> {
    let started = std::time::Instant::now();
    let schema = match policies::load_schema(&a.schema) {
        Ok(s) => s,
        Err(e) => {
            write!(err, "{}", e.render())?;
            return Ok(EXIT_ERROR);
        }
    };
    let file = std::fs::File::open(&a.file).map_err(|e| CliError::Input {
        path: a.file.clone(),
        message: e.to_string(),
    })?;
    let value: serde_json::Value =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| CliError::Input {
            path: a.file.clone(),
            message: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
    let store = match partnergate_core::store::sqlite::SqliteStore::open_in(&a.data_dir) {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(EXIT_ERROR);
        }
    };
    match partnergate_core::directory::import(&store, Some(&schema), value) {
        Ok(n) => {
            writeln!(
                out,
                "imported {n} entities into {} in {:.1}s",
                partnergate_core::store::EntityBackend::describe(&store),
                started.elapsed().as_secs_f64()
            )?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            writeln!(
                err,
                "error: {}: {e} (nothing was imported)",
                a.file.display()
            )?;
            Ok(EXIT_ERROR)
        }
    }
}
