//! Documentation generated from the code, so that the docs cannot contradict it: the table of
//! `vpn-operator run`'s flags in `docs/configuration.md`, rendered from their clap definitions
//! (`src/config.rs`: flag, environment variable, default, help text). A generated table sits
//! between two marker lines of a hand-written page; [`replace_between_markers`] swaps it for a
//! fresh one and leaves the prose around it alone. `tests/integration/docs.rs` fails while a
//! committed table differs from the rendered one.

use clap::{Arg, CommandFactory};

use crate::config::Cli;
use crate::controller::reasons;

/// The page holding the flags table, relative to the repository root.
pub const CONFIGURATION_PAGE: &str = "docs/configuration.md";
pub const FLAGS_BEGIN: &str = "<!-- flags:begin (generated from src/config.rs: cargo run -- config-reference --write docs/configuration.md) -->";
pub const FLAGS_END: &str = "<!-- flags:end -->";
/// What regenerates the table in place.
pub const REGENERATE_FLAGS: &str = "cargo run -- config-reference --write docs/configuration.md";

/// The Markdown table of `vpn-operator run`'s flags: one row per flag, in declaration order.
pub fn flags_table() -> String {
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("vpn-operator has a run subcommand");
    let mut table = String::from("| flag | env | default | meaning |\n|---|---|---|---|\n");
    for arg in run.get_arguments().filter(|a| is_documented(a)) {
        table.push_str(&flag_row(arg));
    }
    table
}

/// clap's own `--help` and `--version` are not configuration.
fn is_documented(arg: &Arg) -> bool {
    !matches!(arg.get_id().as_str(), "help" | "version")
}

fn flag_row(arg: &Arg) -> String {
    let flag = arg
        .get_long()
        .map_or_else(|| "–".to_owned(), |long| format!("`--{long}`"));
    let env = arg
        .get_env()
        .map_or_else(|| "–".to_owned(), |env| format!("`{}`", env.to_string_lossy()));
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let default = if defaults.is_empty() {
        "–".to_owned()
    } else {
        format!("`{}`", defaults.join(","))
    };
    format!("| {flag} | {env} | {default} | {} |\n", meaning(arg))
}

/// The flag's whole help text on one line, with its possible values when they are a fixed set.
fn meaning(arg: &Arg) -> String {
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut text = help.split_whitespace().collect::<Vec<_>>().join(" ");
    // clap drops the full stop of a one-paragraph help; every row ends with one.
    if !text.is_empty() && !text.ends_with('.') {
        text.push('.');
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    // A bool flag's true/false are not worth a sentence.
    if !values.is_empty() && !is_bool(arg) {
        text.push_str(&format!(" One of {}.", values.join(", ")));
    }
    text.replace('|', "\\|")
}

fn is_bool(arg: &Arg) -> bool {
    let names: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    names == ["true", "false"]
}

/// `page` with the lines between the marker lines `begin` and `end` replaced by `generated`;
/// an error when a marker is missing or they are out of order.
pub fn replace_between_markers(
    page: &str,
    begin: &str,
    end: &str,
    generated: &str,
) -> Result<String, String> {
    let start = line_index(page, begin).ok_or_else(|| format!("no line `{begin}`"))?;
    let stop = line_index(page, end).ok_or_else(|| format!("no line `{end}`"))?;
    if stop < start {
        return Err(format!("`{end}` comes before `{begin}`"));
    }
    let lines: Vec<&str> = page.lines().collect();
    let mut out = String::new();
    for line in &lines[..=start] {
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(generated.trim_end());
    out.push_str("\n\n");
    for line in &lines[stop..] {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

fn line_index(page: &str, marker: &str) -> Option<usize> {
    page.lines().position(|line| line.trim_end() == marker)
}

/// The page holding the reason table, and the Argo CD health cases rendered from it.
pub const STATUS_PAGE: &str = "docs/status.md";
pub const ARGO_CASES: &str = "hack/argocd-health-cases.lua";
pub const REASONS_BEGIN: &str = "<!-- reasons:begin -->";
pub const REASONS_END: &str = "<!-- reasons:end -->";
pub const REGENERATE_REASONS: &str = "cargo run -- reason-reference --write";

/// The status page with a freshly rendered reason table.
pub fn status_page(current: &str) -> Result<String, String> {
    replace_between_markers(current, REASONS_BEGIN, REASONS_END, &reasons::markdown())
}

/// The configuration page with a freshly rendered flags table.
pub fn configuration_page(current: &str) -> Result<String, String> {
    replace_between_markers(current, FLAGS_BEGIN, FLAGS_END, &flags_table())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_part_is_replaced_and_the_prose_kept() {
        let page = "# Title\n\nprose before\n<!-- b -->\nold\ntable\n<!-- e -->\nprose after\n";
        let out = replace_between_markers(page, "<!-- b -->", "<!-- e -->", "new\n").unwrap();
        assert_eq!(
            out,
            "# Title\n\nprose before\n<!-- b -->\n\nnew\n\n<!-- e -->\nprose after\n"
        );
        assert_eq!(
            replace_between_markers(&out, "<!-- b -->", "<!-- e -->", "new").unwrap(),
            out,
            "regenerating is idempotent"
        );
    }

    #[test]
    fn missing_or_swapped_markers_are_errors() {
        assert!(replace_between_markers("a\n<!-- e -->\n", "<!-- b -->", "<!-- e -->", "x").is_err());
        assert!(
            replace_between_markers("<!-- e -->\n<!-- b -->\n", "<!-- b -->", "<!-- e -->", "x").is_err()
        );
    }

    #[test]
    fn every_run_flag_has_a_row_with_its_env_and_help() {
        let table = flags_table();
        let run = Cli::command();
        let run = run.find_subcommand("run").unwrap();
        for arg in run.get_arguments().filter(|a| is_documented(a)) {
            let env = arg.get_env().expect("every run flag has an env fallback");
            let row = table
                .lines()
                .find(|l| l.contains(&format!("`{}`", env.to_string_lossy())))
                .unwrap_or_else(|| panic!("no row for {env:?}"));
            assert!(
                !meaning(arg).is_empty(),
                "{env:?} has no help text: the docs would say nothing"
            );
            assert_eq!(
                row.matches(" | ").count(),
                3,
                "a pipe in the help breaks the row: {row}"
            );
        }
    }
}
