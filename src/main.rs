use std::process::ExitCode;

use altostrat_vpn_operator::config::{Cli, Command};
#[cfg(feature = "simulator")]
use altostrat_vpn_operator::{config::LogFormat, simulator};
use altostrat_vpn_operator::{crd, operator, telemetry};
use clap::Parser;

fn write_crds(dirs: &[std::path::PathBuf]) -> Result<(), operator::BoxError> {
    let rendered = crd::render_all()?;
    if dirs.is_empty() {
        for (_, yaml) in &rendered {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    for dir in dirs {
        std::fs::create_dir_all(dir)?;
        for (name, yaml) in &rendered {
            std::fs::write(dir.join(name), yaml)?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds(args) => write_crds(&args.output_dirs),
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
