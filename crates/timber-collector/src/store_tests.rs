//! Tests of the store against a real directory: interleaving, the bound on
//! open files, reopening after a rename, and idempotency keys.

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("timber-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn source_ids() {
    for ok in ["default", "a.b-c_D9", "x", "..a"] {
        assert!(valid_source_id(ok), "{ok}");
    }
    let long = "a".repeat(MAX_SOURCE_ID_LEN + 1);
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a b",
        "é",
        "a\0",
        "../x",
        long.as_str(),
    ] {
        assert!(!valid_source_id(bad), "{bad}");
    }
}

#[test]
fn concurrent_appends_never_interleave() {
    let dir = temp_dir("concurrent");
    // Two open files for three sources: files are closed and reopened all along.
    let store = Arc::new(Store::open(&dir, false, 2).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200 {
                    let line =
                        format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(5000));
                    let source = ["s", "t", "u"][i % 3];
                    store
                        .append(source, line.repeat(3).as_bytes(), 3, None)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut total = 0;
    for source in ["s", "t", "u"] {
        let text = read(&dir, &format!("{source}.ndjson"));
        let lines: Vec<&str> = text.lines().collect();
        total += lines.len();
        for chunk in lines.chunks(3) {
            assert!(chunk.iter().all(|l| *l == chunk[0]));
            serde_json::from_str::<serde_json::Value>(chunk[0]).unwrap();
        }
    }
    assert_eq!(total, 4 * 200 * 3);
    assert_eq!(store.frames(), 2400);
    assert_eq!(store.sources(), 3);
    assert!(store.open_files() <= 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_files_stay_under_the_bound() {
    let dir = temp_dir("bound");
    let store = Store::open(&dir, false, 3).unwrap();
    for round in 0..2 {
        for i in 0..50 {
            let line = format!("{{\"round\":{round}}}\n");
            store
                .append(&format!("s{i}"), line.as_bytes(), 1, None)
                .unwrap();
            assert!(store.open_files() <= 3);
        }
    }
    for i in 0..50 {
        assert_eq!(
            read(&dir, &format!("s{i}.ndjson")),
            "{\"round\":0}\n{\"round\":1}\n"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fsync_store_appends_to_existing_files() {
    let dir = temp_dir("fsync");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.ndjson"), "{\"old\":1}\n").unwrap();
    let store = Store::open(&dir, true, 8).unwrap();
    store.append("a", b"{\"new\":1}\n", 1, None).unwrap();
    store.append("b", b"", 0, None).unwrap();
    assert_eq!(read(&dir, "a.ndjson"), "{\"old\":1}\n{\"new\":1}\n");
    assert!(!dir.join("b.ndjson").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reopen_leaves_renamed_files_alone() {
    let dir = temp_dir("reopen");
    let store = Store::open(&dir, false, 8).unwrap();
    store.append("a", b"{\"n\":1}\n", 1, None).unwrap();
    std::fs::rename(dir.join("a.ndjson"), dir.join("a.ndjson.1")).unwrap();
    // Until told, the open file is the renamed one (as with logrotate).
    store.append("a", b"{\"n\":2}\n", 1, None).unwrap();
    store.reopen();
    assert_eq!(store.open_files(), 0);
    store.append("a", b"{\"n\":3}\n", 1, None).unwrap();
    assert_eq!(read(&dir, "a.ndjson.1"), "{\"n\":1}\n{\"n\":2}\n");
    assert_eq!(read(&dir, "a.ndjson"), "{\"n\":3}\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idempotency_keys_are_per_source_and_recorded_only_once_written() {
    let dir = temp_dir("keys");
    let store = Store::open(&dir, false, 8).unwrap();
    let line = b"{\"n\":1}\n";
    assert_eq!(
        store.append("a", line, 1, Some("k1")).unwrap(),
        Appended::Written
    );
    assert_eq!(
        store.append("a", line, 1, Some("k1")).unwrap(),
        Appended::Replay(1)
    );
    assert_eq!(store.replayed("a", "k1"), Some(1));
    assert_eq!(
        store.append("a", line, 1, Some("k2")).unwrap(),
        Appended::Written
    );
    assert_eq!(
        store.append("b", line, 1, Some("k1")).unwrap(),
        Appended::Written
    );
    assert_eq!(store.append("a", line, 1, None).unwrap(), Appended::Written);
    assert_eq!(store.append("a", line, 1, None).unwrap(), Appended::Written);
    assert_eq!(read(&dir, "a.ndjson").lines().count(), 4);

    // A write that fails leaves the key unrecorded, so the retry is stored.
    std::fs::create_dir_all(dir.join("c.ndjson")).unwrap();
    assert!(store.append("c", line, 1, Some("k")).is_err());
    assert_eq!(store.replayed("c", "k"), None);
    std::fs::remove_dir_all(dir.join("c.ndjson")).unwrap();
    assert_eq!(
        store.append("c", line, 1, Some("k")).unwrap(),
        Appended::Written
    );
    assert_eq!(read(&dir, "c.ndjson"), "{\"n\":1}\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn decoded(parts: &[(&str, &str)]) -> crate::otlp::Decoded {
    crate::otlp::Decoded {
        batches: parts
            .iter()
            .map(|(s, line)| {
                let batch = crate::body::Batch {
                    lines: format!("{line}\n").into_bytes(),
                    frames: 1,
                };
                ((*s).to_owned(), batch)
            })
            .collect(),
        origins: vec![Vec::new(); parts.len()],
        resources: Vec::new(),
    }
}

#[test]
fn a_request_of_several_sources_is_stored_whole_or_not_at_all() {
    let dir = temp_dir("whole");
    let store = Store::open(&dir, false, 4).unwrap();
    store
        .append("a", b"{\"before\":1}\n", 1, None)
        .expect("a first line");
    // The second source cannot be written (its file is a directory): the
    // first one's lines are taken back.
    std::fs::create_dir_all(dir.join("b.ndjson")).unwrap();
    let both = decoded(&[("a", "{\"n\":1}"), ("b", "{\"n\":2}")]);
    assert!(store.append_whole(&both, Some("k1")).is_err());
    assert_eq!(read(&dir, "a.ndjson"), "{\"before\":1}\n");
    // Nothing was recorded under the key: sent again, it is stored.
    std::fs::remove_dir(dir.join("b.ndjson")).unwrap();
    assert_eq!(
        store.append_whole(&both, Some("k1")).unwrap(),
        Appended::Written
    );
    assert_eq!(read(&dir, "a.ndjson"), "{\"before\":1}\n{\"n\":1}\n");
    assert_eq!(read(&dir, "b.ndjson"), "{\"n\":2}\n");
    // A replay stores nothing again in either.
    assert_eq!(
        store.append_whole(&both, Some("k1")).unwrap(),
        Appended::Replay(1)
    );
    assert_eq!(read(&dir, "b.ndjson"), "{\"n\":2}\n");
}
