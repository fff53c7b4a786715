use std::process::ExitCode;

use std::path::Path;

use altostrat_vpn_operator::config::{
    Cli, Command, ConfigReferenceArgs, CrdsArgs, ProbeArgs, ReasonReferenceArgs,
};
use altostrat_vpn_operator::controller::reasons;
use altostrat_vpn_operator::{cli, crd, crd_chart, generated_docs, operator, telemetry};
#[cfg(feature = "simulator")]
use altostrat_vpn_operator::{config::LogFormat, simulator};
use clap::Parser;

fn write_files(dir: &Path, files: &[(String, String)]) -> Result<(), operator::BoxError> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn write_crds(args: &CrdsArgs) -> Result<(), operator::BoxError> {
    let rendered = crd::render_all()?;
    if args.output_dirs.is_empty() && args.helm_charts.is_empty() {
        for (_, yaml) in &rendered {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    for dir in &args.output_dirs {
        write_files(dir, &rendered)?;
    }
    for chart in &args.helm_charts {
        // Only into a chart: a mistyped path must not grow a stray templates/ tree.
        if !chart.join("Chart.yaml").is_file() {
            return Err(format!("--helm-chart {}: no Chart.yaml there", chart.display()).into());
        }
        write_files(&chart.join(crd_chart::TEMPLATES_DIR), &crd_chart::render_all()?)?;
    }
    Ok(())
}

fn config_reference(args: &ConfigReferenceArgs) -> Result<(), operator::BoxError> {
    let Some(page) = &args.write else {
        print!("{}", generated_docs::flags_table());
        return Ok(());
    };
    let current = std::fs::read_to_string(page)?;
    let updated =
        generated_docs::configuration_page(&current).map_err(|e| format!("{}: {e}", page.display()))?;
    std::fs::write(page, updated)?;
    Ok(())
}

fn reason_reference(args: &ReasonReferenceArgs) -> Result<(), operator::BoxError> {
    if !args.write {
        print!("{}", reasons::markdown());
        return Ok(());
    }
    let page = generated_docs::STATUS_PAGE;
    let current = std::fs::read_to_string(page)?;
    let updated = generated_docs::status_page(&current).map_err(|e| format!("{page}: {e}"))?;
    std::fs::write(page, updated)?;
    std::fs::write(generated_docs::ARGO_CASES, reasons::argo_cases())?;
    Ok(())
}

/// One request to the operator's health endpoint; its answer goes to stdout, where the
/// kubelet takes an exec probe's message from.
async fn probe(args: &ProbeArgs) -> Result<(), operator::BoxError> {
    let mut addr = args.metrics_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}{}", args.endpoint.path());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(4))
        .build()?;
    let answer = client.get(&url).send().await?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    println!("{}", body.trim_end());
    if !status.is_success() {
        return Err(format!("{url} answered {status}").into());
    }
    Ok(())
}

/// Under the name `kubectl-altostrat` (a symlink or copy on PATH), the binary is the kubectl
/// plugin: `kubectl altostrat status` runs it with that argv[0].
async fn plugin() -> ExitCode {
    let plugin = cli::kubectl::Plugin::parse();
    match cli::kubectl::run(plugin.args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubectl altostrat: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    if cli::kubectl::invoked_as_plugin(&argv0) {
        return plugin().await;
    }
    let parsed = Cli::parse();
    let result = match parsed.command {
        Command::Crds(args) => write_crds(&args),
        Command::ConfigReference(args) => config_reference(&args),
        Command::ReasonReference(args) => reason_reference(&args),
        Command::Probe(args) => probe(&args).await,
        Command::Import(args) => cli::import::run(&args).await,
        Command::Kubectl(args) => cli::kubectl::run(args).await,
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => {
            telemetry::init(LogFormat::Text);
            simulator::run(args).await
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            operator::run(*args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpn-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
