//! `timber-collector`: the collector as a plain binary, with the flags of
//! `timber collect` (the same parser, [`timber_collector::cli`]), for running
//! and benchmarking it without Python.

use std::process::ExitCode;

fn main() -> ExitCode {
    let key = std::env::var("TIMBER_API_KEY").ok();
    ExitCode::from(timber_collector::cli::main(
        "timber-collector",
        std::env::args().skip(1),
        key,
    ))
}
