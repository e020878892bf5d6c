use clap::Parser;

/// canton-ops: the operator CLI over the coordinator API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t)]
    log_format: sidecar_telemetry::LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = sidecar_telemetry::init(args.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "canton-ops started");
    Ok(())
}
