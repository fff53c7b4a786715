//! The documentation against the code and against itself: the flags table of
//! `docs/configuration.md` is what the flags' definitions render (regenerate with
//! `cargo run -- config-reference --write docs/configuration.md`), and every relative link of
//! every Markdown file of the repository, with its `#anchor`, points at a file and a heading
//! that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use altostrat_vpn_operator::controller::reasons;
use altostrat_vpn_operator::generated_docs::{
    ARGO_CASES, CONFIGURATION_PAGE, REGENERATE_FLAGS, REGENERATE_REASONS, STATUS_PAGE, configuration_page,
    flags_table, status_page,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_configuration_page_holds_the_flags_as_defined() {
    let committed = read(&root().join(CONFIGURATION_PAGE));
    let rendered = configuration_page(&committed).unwrap_or_else(|e| {
        panic!("{CONFIGURATION_PAGE}: {e}; the generated flags table needs its two marker lines")
    });
    assert!(
        committed == rendered,
        "{CONFIGURATION_PAGE}'s flags table differs from the flags in src/config.rs; regenerate \
         it with `{REGENERATE_FLAGS}`. The table as the flags define it:\n\n{}",
        flags_table()
    );
}

#[test]
fn the_status_page_and_the_argo_cd_cases_hold_the_reason_table() {
    let committed = read(&root().join(STATUS_PAGE));
    let rendered = status_page(&committed).unwrap_or_else(|e| panic!("{STATUS_PAGE}: {e}"));
    assert!(
        committed == rendered,
        "{STATUS_PAGE}'s reason table differs from src/controller/reasons.rs; regenerate it with \
         `{REGENERATE_REASONS}`. The table:\n\n{}",
        reasons::markdown()
    );
    assert!(
        read(&root().join(ARGO_CASES)) == reasons::argo_cases(),
        "{ARGO_CASES} differs from src/controller/reasons.rs; regenerate it with `{REGENERATE_REASONS}`"
    );
}

/// The hand-written kstatus table of the status page (checked against real objects by the
/// e2e suite) says of each `Ready` reason what the reason table says.
#[test]
fn the_kstatus_table_agrees_with_the_reason_table() {
    let page = read(&root().join(STATUS_PAGE));
    let table = page
        .split("<!-- kstatus:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- kstatus:end -->").next())
        .expect("the status page has a kstatus table");
    let mut checked = 0;
    let rows = table.lines().skip_while(|l| !l.starts_with("|---")).skip(1);
    for line in rows {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        for reason in cells[1].split(',').map(|r| r.trim().trim_matches('`')) {
            let row = reasons::ROWS
                .iter()
                .find(|r| r.condition == "Ready" && r.reason == reason)
                .unwrap_or_else(|| panic!("{reason}: not a Ready reason of the reason table"));
            assert_eq!(reasons::kstatus(row), cells[2], "{reason}");
            checked += 1;
        }
    }
    let ready_rows = reasons::ROWS.iter().filter(|r| r.condition == "Ready").count();
    assert_eq!(checked, ready_rows, "every Ready reason has a kstatus row");
}

/// Every Markdown file of the repository (build output and hidden folders left out).
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, found);
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The text of a Markdown page without its fenced code blocks and code spans, where a `](`
/// is code, not a link.
fn prose(page: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            let without_code: String = line
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, part)| part)
                .collect();
            lines.push(without_code);
        }
    }
    lines
}

/// The targets of the page's links: inline `[text](target)` and reference definitions
/// `[name]: target`.
fn link_targets(page: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(page) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(close) = after.find(')') else { break };
            targets.push(after[..close].split_whitespace().next().unwrap_or("").to_owned());
            rest = &after[close..];
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((_, target)) = trimmed.split_once("]: ")
        {
            targets.push(target.trim().to_owned());
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens; a
/// repeated heading gets `-1`, `-2`, ….
fn anchors(page: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut in_fence = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while !found.insert(unique.clone()) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
    }
    found
}

/// What is wrong with one link of `page`, if anything.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(path)
    };
    if !file.exists() {
        return Some(format!("{target}: no file {}", file.display()));
    }
    if anchor.is_empty() || file.extension().is_none_or(|e| e != "md") {
        return None;
    }
    let known = anchors(&read(&file));
    (!known.contains(anchor)).then(|| format!("{target}: no heading with anchor #{anchor}"))
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let mut pages = Vec::new();
    markdown_files(root(), &mut pages);
    pages.sort();
    assert!(
        pages.iter().any(|p| p.ends_with("README.md")) && pages.iter().any(|p| p.ends_with("docs/status.md")),
        "the README and docs/ were not found under {}",
        root().display()
    );
    let mut problems = Vec::new();
    for page in &pages {
        for target in link_targets(&read(page)) {
            if let Some(problem) = broken(page, &target) {
                let shown = page.strip_prefix(root()).unwrap_or(page);
                problems.push(format!("{}: {problem}", shown.display()));
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn anchors_follow_github() {
    let page = "# Status and conditions\n## Reading a plan\n```sh\n# not a heading\n```\n## Reading a plan\n### `ObserveOnly`, pause & co.\n";
    let found: Vec<String> = anchors(page).into_iter().collect();
    assert_eq!(
        found,
        [
            "observeonly-pause--co",
            "reading-a-plan",
            "reading-a-plan-1",
            "status-and-conditions"
        ]
    );
}

/// The README is a newcomer's first page (what it is, the local demo, the install, the tests,
/// where to read more); the reference lives in docs/.
#[test]
fn the_readme_stays_short_with_the_demo_first() {
    let readme = read(&root().join("README.md"));
    assert!(
        readme.len() <= 15 * 1024,
        "README.md is {} bytes, over 15 KiB: move reference material to docs/",
        readme.len()
    );
    let demo_line = readme.lines().position(|l| l.contains("scripts/demo.sh"));
    assert!(
        demo_line.is_some_and(|n| n < 40),
        "the local demo (scripts/demo.sh) must be within the README's first 40 lines"
    );
    // scripts/readme-path.sh follows the install section; scripts/test.sh and .ci/run call
    // the test command the README's ("Run the tests").
    assert!(readme.lines().any(|l| l == "## Install on your cluster"));
    let tests = readme
        .split_once("\n## Run the tests\n")
        .map(|(_, section)| section.split("\n## ").next().unwrap_or_default())
        .expect("the README has a section \"Run the tests\"");
    assert!(
        tests.lines().any(|l| l.trim() == "scripts/test.sh"),
        "\"Run the tests\" shows the test command scripts/test.sh"
    );
}
