//! Helpers of the tests of the decision logs shipped into PostgreSQL.

use std::path::Path;
use std::process::Command;

use super::BIN;

/// The binary with `args`: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The records of a log file (its chain verified whole).
pub fn file_records(path: &Path) -> u64 {
    let r = partnergate::audit::chain::verify(path).unwrap();
    assert!(r.ok(), "{}: {:?}", path.display(), r.problem);
    r.records
}

pub fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// (rows, distinct seqs, min seq, max seq) of one log in the database.
pub fn rows_of(c: &mut postgres::Client, log_id: &str) -> (i64, i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT seq), COALESCE(min(seq), 0), COALESCE(max(seq), 0)
             FROM audit_records WHERE log_id = $1",
            &[&log_id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}
