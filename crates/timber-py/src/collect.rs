//! `timber collect`: hands the command line to the collector's own parser
//! ([`timber_collector::cli`], the one the `timber-collector` binary uses) and
//! runs it with the GIL released.

use pyo3::prelude::*;

/// Parses `argv` (the arguments after `collect`) and runs the collector until
/// SIGINT or SIGTERM; returns the exit status. Usage and mistakes are printed
/// by the collector itself, exactly as the `timber-collector` binary does.
#[pyfunction]
pub fn collect_main(py: Python<'_>, argv: Vec<String>) -> PyResult<u8> {
    let key = std::env::var("TIMBER_API_KEY").ok();
    let status = py.detach(|| timber_collector::cli::main("timber collect", argv, key));
    // The collector consumed SIGINT to shut down; Python's own handler saw it
    // too, and raising its KeyboardInterrupt here keeps it inside the call.
    py.check_signals()?;
    Ok(status)
}
