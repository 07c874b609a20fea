use std::process::ExitCode;

fn main() -> ExitCode {
    fledge_simulator::run_cli()
}
