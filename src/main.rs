//! The `pcp` binary: parse arguments, set up logging, run, map the result to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    pcp::cli::main()
}
