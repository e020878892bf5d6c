use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = canton_ops::Cli::parse();
    let _telemetry = sidecar_telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("canton-ops: cannot start the runtime: {error}");
            return ExitCode::from(canton_ops::exit::INTERNAL);
        }
    };
    match runtime.block_on(canton_ops::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("canton-ops: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
