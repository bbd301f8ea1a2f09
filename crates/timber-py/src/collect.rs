//! `timber collect`: runs the bundled collector with the GIL released, and
//! maps its errors to `ValueError` (bad settings) and `OSError` (the system).

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use timber_collector::{Config, Error};

fn to_py_err(err: Error) -> PyErr {
    let message = err.to_string();
    match &err {
        Error::Listen(_) | Error::MaxBody => PyValueError::new_err(message),
        Error::Bind { source, .. } | Error::Out { source, .. } | Error::Io(source) => {
            match source.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, message)),
                None => PyOSError::new_err(message),
            }
        }
    }
}

/// Runs the collector until SIGINT or SIGTERM; blocks without holding the GIL.
#[pyfunction]
#[pyo3(signature = (listen, out, api_key = None, max_body = 10_485_760, fsync = false, quiet = false))]
pub fn collect(
    py: Python<'_>,
    listen: String,
    out: String,
    api_key: Option<String>,
    max_body: u64,
    fsync: bool,
    quiet: bool,
) -> PyResult<()> {
    let config = Config {
        listen,
        out: out.into(),
        api_key,
        max_body,
        fsync,
        quiet,
    };
    py.detach(|| timber_collector::run(config))
        .map_err(to_py_err)?;
    // The collector consumed SIGINT to shut down; Python's own handler saw it
    // too, and raising its KeyboardInterrupt here keeps it inside the call.
    py.check_signals()
}
