//! The crate's modules form layers: a module refers only to modules on the
//! floors below it (the list in `src/lib.rs`'s crate docs), so there is no
//! import loop. Test code (`#[cfg(test)]` and `tests.rs` files) may look
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> floor` from the numbered list under "# Layers" in lib.rs.
fn floors(lib: &str) -> BTreeMap<String, usize> {
    let mut floors = BTreeMap::new();
    let docs = lib
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "# Layers");
    for line in docs {
        let line = line.trim();
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(floor) = number.parse::<usize>() else {
            continue;
        };
        let names = rest.split(':').next().unwrap_or("");
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            if !name.is_empty() {
                floors.insert(name.to_owned(), floor);
            }
        }
    }
    floors
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// Every module name `text` names after `prefix` (`crate::`, `super::`).
fn referred(text: &str, prefix: &str, into: &mut BTreeSet<String>) {
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[at + prefix.len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        into.insert(name);
    }
}

#[test]
fn every_module_refers_only_to_lower_floors() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let floors = floors(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(
        floors.len() >= 10,
        "the layer list was not found: {floors:?}"
    );
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&floor) = floors.get(&module) else {
            problems.push(format!("module `{module}` is not in lib.rs's layer list"));
            continue;
        };
        let mut sources = Vec::new();
        if path.is_dir() {
            files(&path, &mut sources);
        } else {
            sources.push(path.clone());
        }
        for file in sources {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            let mut names = BTreeSet::new();
            referred(&text, "crate::", &mut names);
            // At a module's top (`src/x.rs`, `src/x/mod.rs`), `super::` is the crate.
            let top = file.parent() == Some(&src)
                || (file.file_name().is_some_and(|n| n == "mod.rs")
                    && file.parent().and_then(Path::parent) == Some(&src));
            if top {
                referred(&text, "super::", &mut names);
            }
            for name in names {
                match floors.get(&name) {
                    Some(&other) if other >= floor && name != module => problems.push(format!(
                        "{} (`{module}`, floor {floor}) uses `{name}` (floor {other})",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
