//! `timber._engine`: the thin PyO3 glue between the `timber` package and the
//! engine. It converts Python values, releases the GIL around waits, and maps
//! errors; the logic lives in `timber-core`.

mod collect;
mod context;
mod convert;
mod engine;
mod format;
mod frame;
mod names;
mod settings;

use pyo3::prelude::*;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<context::PySnapshot>()?;
    m.add_class::<context::PyGlobal>()?;
    m.add_class::<format::PyJsonFormat>()?;
    m.add_function(wrap_pyfunction!(collect::collect_main, m)?)?;
    m.add_function(wrap_pyfunction!(settings::declared, m)?)?;
    m.add_function(wrap_pyfunction!(settings::unknown_option, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    names::warm(m.py())?;
    Ok(())
}
