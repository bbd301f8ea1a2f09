//! The Python attribute and method names the record path looks up, interned
//! once when the module is imported, and the other state it would otherwise
//! build lazily on its first record.
//!
//! Why at import: a lazily built value (pyo3's `intern!`, a `PyOnceLock`)
//! is guarded by a once-lock, and a fork while another thread is building
//! it copies the lock half-taken into the child, where nobody ever
//! finishes it: the child's first record would wait for good. Import runs
//! before any handler exists, so no record can race it.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

macro_rules! names {
    ($($field:ident = $text:literal),* $(,)?) => {
        /// Interned names, one field per name.
        pub struct Names {
            $(
                #[doc = concat!("`", $text, "`")]
                pub $field: Py<PyString>,
            )*
        }

        impl Names {
            fn new(py: Python<'_>) -> Self {
                Self { $($field: PyString::intern(py, $text).unbind(),)* }
            }
        }
    };
}

names! {
    dict = "__dict__",
    args = "args",
    get_message = "getMessage",
    tb_next = "tb_next",
    tb_frame = "tb_frame",
    f_code = "f_code",
    co_filename = "co_filename",
    co_name = "co_name",
    tb_lineno = "tb_lineno",
    get_current_span = "get_current_span",
    get_span_context = "get_span_context",
    is_valid = "is_valid",
    trace_id = "trace_id",
    span_id = "span_id",
    trace_flags = "trace_flags",
    isoformat = "isoformat",
    encode = "encode",
    get = "get",
}

static NAMES: PyOnceLock<Names> = PyOnceLock::new();

/// The interned names (built at import; built here if somehow not yet).
pub fn names(py: Python<'_>) -> &'static Names {
    NAMES.get_or_init(py, || Names::new(py))
}

/// Builds, at import, everything the record path would build lazily.
pub fn warm(py: Python<'_>) -> PyResult<()> {
    names(py);
    crate::frame::warm(py)?;
    crate::engine::warm();
    // The engine's own lazily read value.
    timber_core::hostname();
    Ok(())
}
