//! The `trace` binary: a thin shell over trace-cli, which owns parsing and exit codes.

fn main() -> std::process::ExitCode {
    trace_cli::main()
}
