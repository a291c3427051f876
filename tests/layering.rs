//! The layout's rules, held against the source: which files may name which
//! crate, which folders may import which, and how long a file may grow.
//! Each rule fails here the day a change breaks it, naming the file and line.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to the crate root.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy();
            (relative.replace('\\', "/"), text)
        })
        .collect()
}

/// Lines of code (not comments) that name `name::` at the start of a path
/// or `use name`: a use of the crate `name`, or of a top-level module.
fn naming<'a>(text: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let path = format!("{name}::");
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| {
            line.match_indices(&path).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                !before.is_some_and(|c| c == ':' || c == '_' || c.is_alphanumeric())
            }) || line.trim_start().starts_with(&format!("use {name}"))
        })
        .map(|(i, line)| (i + 1, line))
        .collect()
}

fn allowed(file: &str, places: &[&str]) -> bool {
    places.iter().any(|place| file.starts_with(place))
}

#[test]
fn dependency_crates_are_named_only_where_they_belong() {
    let rules: &[(&str, &[&str])] = &[
        (
            "tonic",
            &[
                "src/grpc/",
                "src/http/",
                "src/middleware/",
                "src/tls.rs",
                "src/startup/",
            ],
        ),
        (
            "axum",
            &["src/grpc/", "src/http/", "src/middleware/", "src/startup/"],
        ),
        ("sled", &["src/store/sled/"]),
        ("redis", &["src/store/redis/"]),
        (
            "reqwest",
            &[
                "src/backend/",
                "src/operations/webhook.rs",
                "src/operations/destinations.rs",
            ],
        ),
    ];
    let mut broken = Vec::new();
    for (file, text) in sources() {
        for (name, places) in rules {
            if allowed(&file, places) {
                continue;
            }
            for (line, code) in naming(&text, name) {
                broken.push(format!("{file}:{line} names {name}: {}", code.trim()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn layers_import_only_downwards() {
    // (folder, modules of this crate it must not import, why)
    let rules: &[(&str, &[&str], &str)] = &[
        (
            "src/dialogue/",
            &[
                "engine",
                "store",
                "router",
                "backend",
                "grpc",
                "http",
                "middleware",
            ],
            "the domain model sits under everything that uses it",
        ),
        (
            "src/engine/",
            &[
                "store",
                "grpc",
                "http",
                "middleware",
                "operations",
                "startup",
            ],
            "the engine knows its ports, not the stores or the transport",
        ),
        (
            "src/store/",
            &["engine", "grpc", "http", "middleware", "router", "backend"],
            "stores implement ports; they call nothing above them",
        ),
        (
            "src/middleware/",
            &["grpc", "http", "engine", "store", "startup"],
            "the layers serve both fronts, which depend on them",
        ),
        (
            "src/operations/",
            &["grpc", "http", "middleware", "store"],
            "asynchronous turns are domain code; the transport converts them",
        ),
        (
            "src/backend/",
            &["engine", "store", "router", "grpc", "http"],
            "backends speak to models only",
        ),
    ];
    let mut broken = Vec::new();
    for (file, text) in sources() {
        for (folder, forbidden, why) in rules {
            if !file.starts_with(folder) || file.contains("/tests/") || file.ends_with("suite.rs") {
                continue;
            }
            for module in *forbidden {
                let path = format!("crate::{module}::");
                let used = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim_start().starts_with("//"))
                    .filter(|(_, l)| l.contains(&path) || l.contains(&format!("crate::{module};")));
                for (line, code) in used {
                    broken.push(format!(
                        "{file}:{} uses {module} ({why}): {}",
                        line + 1,
                        code.trim()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_source_file_grows_past_500_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .map(|(file, text)| (file, text.lines().count()))
        .filter(|(_, lines)| *lines > 500)
        .map(|(file, lines)| format!("{file}: {lines} lines"))
        .collect();
    assert!(long.is_empty(), "split these by job: {long:?}");
}
