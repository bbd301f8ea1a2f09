//! A collector whose process has run out of file descriptors answers 503 with
//! `Retry-After` (a condition that passes), not 500, and stores the batch once
//! descriptors are free again. The server runs in this test's own process, so
//! that the test can take every free descriptor itself; it is the only test
//! in this binary for the same reason.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use timber_collector::budget::Budget;
use timber_collector::conn::Limits;
use timber_collector::server::{self, AppState};
use timber_collector::store::Store;

/// Sends one request and reads the whole answer (the server closes after it).
fn post(conn: &mut TcpStream, source: &str, body: &[u8]) -> String {
    let head = format!(
        "POST /sources/{source}/frames HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn out_of_descriptors_is_503_with_retry_after() {
    let dir = std::env::temp_dir().join(format!("timber-descriptors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(AppState {
        store: Arc::new(Store::open(&dir, false, 16).unwrap()),
        api_key: None,
        max_body: 1 << 20,
        root_source: "root".into(),
        read_timeout: Duration::from_secs(30),
        budget: Budget::new(64 << 20),
    });
    let limits = Limits {
        max_connections: 64,
        read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(server::serve(
        listener,
        state,
        limits,
        async {
            let _ = stopped.await;
        },
        true,
    ));

    // Connected (and so accepted) before the descriptors run out.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut hogs = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => hogs.push(file),
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(24), "{err}"); // EMFILE
                break;
            }
        }
    }
    let answer = post(&mut conn, "s", b"{\"n\":1}\n");
    drop(hogs);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("out of file descriptors"), "{answer}");
    assert!(!dir.join("s.ndjson").exists());

    let mut conn = TcpStream::connect(addr).unwrap();
    let answer = post(&mut conn, "s", b"{\"n\":1}\n");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(
        std::fs::read_to_string(dir.join("s.ndjson")).unwrap(),
        "{\"n\":1}\n"
    );

    stop.send(()).unwrap();
    runtime.block_on(server).unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
