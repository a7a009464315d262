//! Shared by the benchmark feeders (`workload`, `cerbos_feed`): ask every
//! question of a peer check from a few connections at once and add up what
//! each part found. It must never know what a question or a peer is.

/// What one part of a check found: allows, differences, and the report of
/// each difference.
pub type Found = (usize, usize, String);

/// Run `check` over `items` in four parts at once (the servers are
/// latency-bound one question at a time) and add up the parts; the first
/// part that failed fails the whole.
pub fn checked_in_parallel<T: Sync>(
    items: &[T],
    check: impl Fn(&[T]) -> Result<Found, String> + Sync,
) -> Result<Found, String> {
    let chunk = items.len().div_ceil(4).max(1);
    let check = &check;
    let results: Vec<Result<Found, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || check(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a checker thread panicked".into()))
            })
            .collect()
    });
    let (mut allows, mut differ, mut report) = (0, 0, String::new());
    for r in results {
        let (a, d, text) = r?;
        (allows, differ) = (allows + a, differ + d);
        report.push_str(&text);
    }
    Ok((allows, differ, report))
}
