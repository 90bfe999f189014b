//! README stays true to the tree: its layout table names every folder of the
//! repository and every crate of the workspace (and nothing that is not there), and
//! its exit code table is the one `handover --help` prints.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The first cells of the rows of the table under the heading `heading`.
fn first_cells(text: &str, heading: &str) -> Vec<String> {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

#[test]
fn the_layout_table_names_every_folder_and_crate() {
    let listed: BTreeSet<String> = first_cells(&readme(), "## Layout")
        .into_iter()
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    for path in &listed {
        assert!(
            root().join(path).is_dir(),
            "README lists {path}/, which is not a folder"
        );
    }
    let mut expected = BTreeSet::new();
    for entry in std::fs::read_dir(root()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') && name != "target" {
            expected.insert(name);
        }
    }
    // Crates nested in other folders (loader/sys...).
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        if member != "." {
            expected.insert(member.to_owned());
        }
    }
    let missing: Vec<_> = expected.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "README's layout table lacks {missing:?}"
    );
}

#[test]
fn the_exit_code_table_is_the_commands() {
    let documented: Vec<u8> = first_cells(&readme(), "## Exit codes")
        .iter()
        .map(|c| c.parse().unwrap_or_else(|_| panic!("exit code {c}")))
        .collect();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let printed: Vec<u8> = help
        .lines()
        .skip_while(|l| !l.starts_with("Exit codes:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        // A code's line starts with the code; its continuation lines with more
        // indentation and words.
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        documented, printed,
        "README's exit codes and `handover --help`'s"
    );
    assert_eq!(documented, [0, 1, 2, 3, 4, 5, 6]);
}
