//! The README's example as a Rust service: one `tracing` event inside a
//! span, sent as the same frame the Python handler sends for the same call.
//! Where to send comes from the environment:
//!
//! ```sh
//! TIMBER_HOST=http://127.0.0.1:8765 TIMBER_API_KEY=secret TIMBER_SOURCE_ID=app \
//!     cargo run -p timber-tracing --example quickstart
//! ```
//!
//! `order_placed` is a map in the frame: its dotted field names nest.

use tracing_subscriber::prelude::*;

fn main() -> Result<(), timber_tracing::Error> {
    // Held until the end of main: dropping it delivers what was logged.
    let (layer, _guard) = timber_tracing::builder().build()?;
    tracing_subscriber::registry().with(layer).init();

    let _user = tracing::info_span!("user", id = 123).entered();
    tracing::info!(
        order_placed.id = 1234,
        order_placed.total = 520.23,
        "Order #1234 placed, total: $520.23"
    );
    Ok(())
}
