//! The volume metadata store (`src/volume/store.rs`): operations, atomic create of one name
//! from many threads, durability across `kill -9`, and create throughput.
//!
//! The kill test re-runs this test binary as the writer: `child_writer` does nothing unless
//! `BERTH_VOLSTORE_CHILD_DB` names a database, in which case it creates volumes from 8
//! threads and prints `ACK <name>` after each create returned, until it is killed.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use berth::volume::store::{db_path, CreateOutcome, StoreError, VolumeRecord, VolumeStore};

const CHILD_DB: &str = "BERTH_VOLSTORE_CHILD_DB";
const CHILD_PREFIX: &str = "BERTH_VOLSTORE_CHILD_PREFIX";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-volstore-")
        .tempdir_in("/tmp")
        .unwrap()
}

fn record(name: &str, driver: &str) -> VolumeRecord {
    VolumeRecord::new(name, driver)
}

#[test]
fn open_creates_the_volumes_directory_and_an_empty_store() {
    let dir = tempdir();
    let path = db_path(dir.path());
    assert_eq!(path, dir.path().join("volumes/metadata.db"));
    let store = VolumeStore::open_in(dir.path()).unwrap();
    assert!(path.is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("volumes"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o701);
    assert_eq!(store.path(), path);
    assert!(store.is_empty().unwrap());
    assert_eq!(store.list().unwrap(), vec![]);
    assert_eq!(store.get("nothing").unwrap(), None);
    assert!(store.count_by_driver().unwrap().is_empty());
}

#[test]
fn a_second_open_of_the_same_file_fails_while_the_first_is_open() {
    let dir = tempdir();
    let path = dir.path().join("metadata.db");
    let first = VolumeStore::open(&path).unwrap();
    match VolumeStore::open(&path) {
        Err(StoreError::Open { path: p, message }) => {
            assert_eq!(p, path);
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    drop(first);
    VolumeStore::open(&path).unwrap();
}

#[test]
fn create_get_list_put_and_remove() {
    let dir = tempdir();
    let store = VolumeStore::open(&dir.path().join("metadata.db")).unwrap();

    let mut foo = record("foo", "local");
    foo.labels.insert("a".into(), "b".into());
    foo.options.insert("type".into(), "tmpfs".into());
    assert_eq!(
        store.create_if_absent(foo.clone()).unwrap(),
        CreateOutcome::Created(foo.clone())
    );
    assert_eq!(store.get("foo").unwrap(), Some(foo.clone()));

    // Same name again, whatever the driver: the first record wins and is returned.
    let other = record("foo", "myplug:latest");
    assert_eq!(
        store.create_if_absent(other).unwrap(),
        CreateOutcome::Existing(foo.clone())
    );
    assert_eq!(store.get("foo").unwrap(), Some(foo.clone()));

    let bar = record("bar", "myplug:latest");
    let baz = record("baz", "myplug:latest");
    let aaa = record("aaa", "local");
    for r in [&bar, &baz, &aaa] {
        assert_eq!(
            store.create_if_absent(r.clone()).unwrap(),
            CreateOutcome::Created(r.clone())
        );
    }
    let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["aaa", "bar", "baz", "foo"]);
    assert_eq!(store.len().unwrap(), 4);
    assert_eq!(
        store.count_by_driver().unwrap(),
        BTreeMap::from([("local".to_string(), 2), ("myplug:latest".to_string(), 2)])
    );
    let by_driver: Vec<_> = store
        .list_by_driver("myplug:latest")
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(by_driver, ["bar", "baz"]);
    assert!(store.list_by_driver("myplug").unwrap().is_empty());

    // put replaces and returns what it replaced.
    let mut foo2 = foo.clone();
    foo2.labels.clear();
    assert_eq!(store.put(&foo2).unwrap(), Some(foo.clone()));
    assert_eq!(store.get("foo").unwrap(), Some(foo2.clone()));
    assert_eq!(store.put(&record("new", "local")).unwrap(), None);

    // remove_if decides on the stored record.
    assert_eq!(
        store.remove_if("bar", |r| r.driver == "local").unwrap(),
        None
    );
    assert!(store.get("bar").unwrap().is_some());
    assert_eq!(
        store
            .remove_if("bar", |r| r.driver == "myplug:latest")
            .unwrap()
            .map(|r| r.name),
        Some("bar".to_string())
    );
    assert_eq!(store.remove_if("bar", |_| true).unwrap(), None);

    assert!(store.remove("baz").unwrap());
    assert!(!store.remove("baz").unwrap());

    // remove_where: everything local, in one transaction.
    let removed: Vec<_> = store
        .remove_where(|r| r.driver == "local")
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(removed, ["aaa", "foo", "new"]);
    assert!(store.is_empty().unwrap());
}

#[test]
fn records_survive_reopening_with_all_fields() {
    let dir = tempdir();
    let path = dir.path().join("metadata.db");
    let mut r = record("keep", "local");
    r.labels
        .insert("com.docker.volume.anonymous".into(), "".into());
    r.options.insert("o".into(), "size=1m".into());
    r.scope = "global".into();
    {
        let store = VolumeStore::open(&path).unwrap();
        store.create_if_absent(r.clone()).unwrap();
    }
    let store = VolumeStore::open(&path).unwrap();
    let back = store.get("keep").unwrap().unwrap();
    assert_eq!(back, r);
    // Nanoseconds are kept: CreatedAt does not move between inspects.
    assert_eq!(back.created_at, r.created_at);
}

#[test]
fn concurrent_creates_of_one_name_have_exactly_one_winner() {
    let dir = tempdir();
    let store = Arc::new(VolumeStore::open(&dir.path().join("metadata.db")).unwrap());
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut r = record("contended", if i % 2 == 0 { "local" } else { "plug" });
                r.labels.insert("thread".into(), i.to_string());
                barrier.wait();
                store.create_if_absent(r).unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = results
        .iter()
        .filter_map(|o| match o {
            CreateOutcome::Created(r) => Some(r.clone()),
            CreateOutcome::Existing(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = &winners[0];
    for outcome in &results {
        if let CreateOutcome::Existing(existing) = outcome {
            assert_eq!(existing, winner);
        }
    }
    assert_eq!(store.get("contended").unwrap().as_ref(), Some(winner));
    assert_eq!(store.len().unwrap(), 1);
}

/// The in-memory records that answer `list` follow the commits in order: after concurrent
/// creates, puts and removes of overlapping names, `list` equals what a fresh open reads.
#[test]
fn listed_records_match_the_database_after_concurrent_writes() {
    let dir = tempdir();
    let path = dir.path().join("metadata.db");
    let store = Arc::new(VolumeStore::open(&path).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..60 {
                    let name = format!("v{}", (i * 7 + t) % 20);
                    match (i + t) % 4 {
                        0 => {
                            store.create_if_absent(record(&name, "local")).unwrap();
                        }
                        1 => {
                            let mut r = record(&name, "plug");
                            r.labels.insert("writer".into(), t.to_string());
                            store.put(&r).unwrap();
                        }
                        2 => {
                            store.remove_if(&name, |r| r.driver == "plug").unwrap();
                        }
                        _ => {
                            store.remove(&name).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    store.remove_where(|r| r.name.ends_with('3')).unwrap();
    let listed = store.list().unwrap();
    assert_eq!(
        store
            .snapshot()
            .iter()
            .map(|r| (**r).clone())
            .collect::<Vec<_>>(),
        listed
    );
    drop(store);
    let reopened = VolumeStore::open(&path).unwrap();
    assert_eq!(reopened.list().unwrap(), listed);
    assert_eq!(reopened.len().unwrap(), listed.len() as u64);
    assert!(listed.iter().all(|r| !r.name.ends_with('3')), "{listed:?}");
}

/// The writer process of the kill test (does nothing in a normal test run).
#[test]
fn child_writer() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    let prefix = std::env::var(CHILD_PREFIX).unwrap_or_else(|_| "v".into());
    let store = Arc::new(VolumeStore::open(Path::new(&db)).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while Instant::now() < deadline {
                    let name = format!("{prefix}-t{t}-{i}");
                    let mut r = record(&name, "local");
                    r.labels.insert("payload".into(), "x".repeat(i % 300));
                    assert!(matches!(
                        store.create_if_absent(r).unwrap(),
                        CreateOutcome::Created(_)
                    ));
                    // Acknowledged: create_if_absent returned.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {name}").unwrap();
                    out.flush().unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn run_and_kill(db: &Path, prefix: &str, kill_after: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_PREFIX, prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            // A line cut by the kill has no newline and is not seen here, so every name
            // collected was printed after its create returned.
            if let Some(name) = String::from_utf8_lossy(&line).strip_prefix("ACK ") {
                acked.push(name.to_string());
                let _ = tx.send(());
            }
        }
        acked
    });
    let started = Instant::now();
    let mut seen = 0;
    while seen < kill_after {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => seen += 1,
            Err(_) => break,
        }
    }
    assert!(
        seen >= kill_after,
        "writer acknowledged only {seen} creates in {:?}",
        started.elapsed()
    );
    // Writes are still going on in 8 threads: the kill lands inside some commit.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn kill_9_loses_no_acknowledged_create_and_corrupts_nothing() {
    let dir = tempdir();
    let db = dir.path().join("volumes").join("metadata.db");
    let mut acked: Vec<String> = Vec::new();
    for (round, kill_after) in [40usize, 97, 13, 151, 60].into_iter().enumerate() {
        let got = run_and_kill(&db, &format!("r{round}"), kill_after);
        assert!(got.len() >= kill_after);
        acked.extend(got);

        let store = VolumeStore::open(&db).expect("store opens after kill -9");
        let stored: HashSet<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        let missing: Vec<_> = acked.iter().filter(|n| !stored.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged creates lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        // Every record decodes (list skips bad ones; get reports them).
        for name in &stored {
            store.get(name).unwrap().unwrap();
        }
        drop(store);
        let mut raw = redb::Database::open(&db).unwrap();
        assert!(raw.check_integrity().unwrap(), "round {round}: integrity");
    }
    eprintln!(
        "kill -9 test: {} acknowledged creates over 5 kills, all present",
        acked.len()
    );
}

fn measure(store: &Arc<VolumeStore>, threads: usize, per_thread: usize, tag: &str) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let r = record(&format!("{tag}-{t}-{i}"), "local");
                    store.create_if_absent(r).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (threads * per_thread) as f64 / start.elapsed().as_secs_f64()
}

/// Durable creates per second, sequential and from 8 threads. Prints its numbers
/// (`cargo test --test volume_store_db throughput -- --nocapture`); set
/// `BERTH_VOLSTORE_BENCH_N` for a longer run.
#[test]
fn create_throughput() {
    let n: usize = std::env::var("BERTH_VOLSTORE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempdir();
    let store = Arc::new(VolumeStore::open(&dir.path().join("metadata.db")).unwrap());
    let seq = measure(&store, 1, n, "seq");
    let par = measure(&store, 8, n / 8, "par");
    eprintln!("volume store: {seq:.0} creates/s sequential, {par:.0} creates/s with 8 threads (n={n}, durable commit each)");
    assert_eq!(store.len().unwrap() as usize, n + (n / 8) * 8);
}
