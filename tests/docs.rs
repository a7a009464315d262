//! The documentation checked against the tree it describes: the `serve` flag
//! reference in docs/serve.md is what the binary prints, every module path
//! ARCHITECTURE.md names exists, README.md stays a front page, and every
//! relative link of the Markdown documents lands on a file (and heading)
//! that exists.
//!
//! It reads files and runs `partnergate serve --help`; it never starts a
//! server and knows nothing of what the documents say beyond their paths,
//! links and marker lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_partnergate");
const BEGIN: &str = "<!-- serve --help: begin -->";
const END: &str = "<!-- serve --help: end -->";
const README_MAX_LINES: usize = 200;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `partnergate serve --help` as a fresh environment sees it: no
/// `PARTNERGATE_*` variable (clap would print its value) and no terminal.
fn serve_help() -> String {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .expect("run partnergate serve --help");
    assert!(
        out.status.success(),
        "serve --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The fenced block between the marker lines, without its fences.
fn reference_block(doc: &str) -> Result<String, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let begin = lines
        .iter()
        .position(|l| *l == BEGIN)
        .ok_or_else(|| format!("no line `{BEGIN}`"))?;
    let end = lines[begin + 1..]
        .iter()
        .position(|l| *l == END)
        .map(|i| begin + 1 + i)
        .ok_or_else(|| format!("no line `{END}` after `{BEGIN}`"))?;
    let inner = &lines[begin + 1..end];
    match (inner.first(), inner.last()) {
        (Some(open), Some(&"```")) if open.starts_with("```") && inner.len() >= 2 => {
            let mut text = inner[1..inner.len() - 1].join("\n");
            text.push('\n');
            Ok(text)
        }
        _ => Err("the markers hold no fenced block".into()),
    }
}

#[test]
fn the_serve_flag_reference_is_what_serve_help_prints() {
    let help = serve_help();
    assert!(help.contains("--bind"), "unexpected help output:\n{help}");
    let doc = read("docs/serve.md");
    let block = reference_block(&doc).unwrap_or_else(|e| {
        panic!("docs/serve.md: {e}; run scripts/gen-serve-doc.sh to write the flag reference")
    });
    if block != help {
        let first = block
            .lines()
            .zip(help.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| block.lines().count().min(help.lines().count()));
        panic!(
            "docs/serve.md's flag reference differs from `partnergate serve --help` \
             (first at line {} of the block: doc {:?}, binary {:?}); \
             run scripts/gen-serve-doc.sh",
            first + 1,
            block.lines().nth(first),
            help.lines().nth(first)
        );
    }
}

#[test]
fn the_reference_block_is_read_between_its_markers() {
    let doc = format!("intro\n{BEGIN}\n```text\nUsage: x\n\n  --a\n```\n{END}\nafter\n");
    assert_eq!(reference_block(&doc).unwrap(), "Usage: x\n\n  --a\n");
    assert!(reference_block("no markers\n").is_err());
    assert!(reference_block(&format!("{BEGIN}\nloose text\n{END}\n")).is_err());
    assert!(reference_block(&format!("{END}\n{BEGIN}\n```\nx\n```\n")).is_err());
}

/// Every `crates/...` and `src/...` path in `text`: a run of path characters
/// starting at a word boundary, trailing dots dropped.
fn repo_paths(text: &str) -> BTreeSet<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    let mut found = BTreeSet::new();
    for prefix in ["crates/", "src/"] {
        for (at, _) in text.match_indices(prefix) {
            let boundary = text[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !is_path_char(c));
            if !boundary {
                continue;
            }
            let path: String = text[at..]
                .chars()
                .take_while(|&c| is_path_char(c))
                .collect();
            let path = path.trim_end_matches('.');
            if path.trim_end_matches('/') != prefix.trim_end_matches('/') {
                found.insert(path.to_string());
            }
        }
    }
    found
}

/// The modules ARCHITECTURE.md lists under a crate (`N. \`crates/X\``), as
/// bullets that open with a backticked name: `(crate dir, module, line)`.
fn listed_modules(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut krate: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let head = line.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        if line.starts_with(|c: char| c.is_ascii_digit()) && head.starts_with(". `") {
            krate = head[3..]
                .split('`')
                .next()
                .filter(|p| p.starts_with("crates/"))
                .map(str::to_string);
            continue;
        }
        if line.starts_with("## ") {
            krate = None;
        }
        let (Some(dir), Some(rest)) = (&krate, line.strip_prefix("   - `")) else {
            continue;
        };
        let Some(name) = rest.split('`').next() else {
            continue;
        };
        if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            out.push((dir.clone(), name.to_string(), n + 1));
        }
    }
    out
}

#[test]
fn every_path_and_module_architecture_names_exists() {
    let text = read("ARCHITECTURE.md");
    let paths = repo_paths(&text);
    assert!(
        paths.iter().any(|p| p.ends_with(".rs")) && paths.iter().any(|p| p.starts_with("crates/")),
        "no path found in ARCHITECTURE.md: {paths:?}"
    );
    let missing: Vec<&String> = paths.iter().filter(|p| !repo().join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );

    let modules = listed_modules(&text);
    assert!(modules.len() > 20, "too few modules found: {modules:?}");
    let missing: Vec<String> = modules
        .iter()
        .filter(|(dir, name, _)| {
            let src = repo().join(dir).join("src");
            !src.join(format!("{name}.rs")).exists() && !src.join(name).join("mod.rs").exists()
        })
        .map(|(dir, name, line)| format!("line {line}: `{name}` in {dir}/src"))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md lists modules that do not exist: {missing:?}"
    );
}

#[test]
fn the_path_scanner_finds_what_a_reader_sees() {
    let found = repo_paths(
        "see `crates/core/src/authz.rs`, crates/policy and src/cli/mod.rs. Not \
         my_crates/x, a/src/y nor the bare crates/.",
    );
    let want: BTreeSet<String> = [
        "crates/core/src/authz.rs",
        "crates/policy",
        "src/cli/mod.rs",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, want);
    let listed = listed_modules(
        "1. `crates/policy` (x):\n   - `policies` — a\n     `not_a_bullet`\n   - the crate root\n## Next\n   - `after`\n",
    );
    assert_eq!(
        listed,
        vec![("crates/policy".to_string(), "policies".to_string(), 2)]
    );
}

/// The Markdown documents whose links are checked.
fn documents() -> Vec<String> {
    let mut docs: Vec<String> = [
        "README.md",
        "CONTRIBUTING.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut in_docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    docs
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((n + 1, line));
        }
    }
    out
}

/// The targets of the inline links `[text](target)` in `line`.
fn link_targets(line: &str) -> Vec<String> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            rest.find(')').map(|end| rest[..end].trim().to_string())
        })
        .collect()
}

/// A heading's anchor as GitHub makes it.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_lands_on_a_file_and_heading() {
    let root = repo().canonicalize().expect("repo root");
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        let base = Path::new(&doc).parent().unwrap_or(Path::new(""));
        for (n, line) in prose(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, frag) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    repo().join(&doc)
                } else {
                    repo().join(base).join(file)
                };
                let Ok(real) = path.canonicalize() else {
                    broken.push(format!("{doc}:{n}: {target}: no such file"));
                    continue;
                };
                if !real.starts_with(&root) {
                    broken.push(format!("{doc}:{n}: {target}: outside the repository"));
                    continue;
                }
                if let Some(frag) = frag.filter(|_| real.extension().is_some_and(|e| e == "md")) {
                    let target_text = std::fs::read_to_string(&real).unwrap_or_default();
                    if !anchors(&target_text).contains(frag) {
                        broken.push(format!("{doc}:{n}: {target}: no heading #{frag}"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_front_page() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES}: move the detail into docs/"
    );
    // The two commands: CI runs the second, a newcomer the first.
    for command in ["cargo run --release -- serve", "cargo test"] {
        assert!(
            readme.contains(&format!("```sh\n{command}\n```")),
            "README.md lost its command block `{command}`"
        );
    }
    let outside: Vec<String> = readme
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("://") || l.contains("](../") || l.contains("`../"))
        .map(|(n, l)| format!("line {}: {l}", n + 1))
        .collect();
    assert!(
        outside.is_empty(),
        "README.md points outside the repository:\n{}",
        outside.join("\n")
    );
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" Writes and timeouts"), "writes-and-timeouts");
    assert_eq!(
        anchor(" Quotas are rules too: `policies/quotas.toml`"),
        "quotas-are-rules-too-policiesquotastoml"
    );
    assert_eq!(
        link_targets("a [x](docs/a.md#b) and [y](c.md)."),
        vec!["docs/a.md#b", "c.md"]
    );
}
