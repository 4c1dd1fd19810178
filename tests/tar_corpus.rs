//! The tar corpus: every breakout and bomb shape sent as a `POST /plugins/create` context to a
//! real daemon. For each: what berth does (refused, or neutralised and created), that nothing
//! was written outside the plugin's rootfs, and that a refused context leaves nothing behind (no
//! plugin record, no staging directory, no partial blob). Registry layers go through the same
//! extractor (see tests/plugin_registry.rs for the pull side and src/distribution/extract/tests.rs
//! for the unit cases).
//!
//! What dockerd does with the same shapes (moby pkg/archive `createTarFile`, which unpacks
//! plugin layers): `..` names and link targets climbing out are breakout errors; block and
//! character devices are created with mknod (skipped only in a user namespace); FIFOs are
//! created; modes are applied with chmod, setuid and setgid bits included; nothing bounds what
//! an archive unpacks to. berth differs on devices (skipped with a warning: a plugin gets its
//! devices from its config) and on the bound (`--max-unpacked-size`).

mod common;
use common::archives::*;
use common::*;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What became of one shape.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Refused with this status and a message containing this text.
    Refused(u16, &'static str),
    /// Created: the entry was kept inside the rootfs (and checked by the shape's own check).
    Created,
}

struct Shape {
    name: &'static str,
    tar: Vec<u8>,
    want: Outcome,
    /// For created plugins: a check of the unpacked rootfs.
    check: Option<fn(&Path)>,
}

/// The daemon, and a directory outside it that no shape may write into.
struct Corpus {
    d: Daemon,
    outside: tempfile::TempDir,
}

impl Corpus {
    fn start(extra: &[&str]) -> Corpus {
        let outside = short_tempdir("bto");
        std::fs::write(outside.path().join("sentinel"), b"untouched").unwrap();
        Corpus {
            d: Daemon::start_with(extra),
            outside,
        }
    }

    fn out(&self) -> String {
        self.outside.path().display().to_string()
    }

    fn plugins_root(&self) -> PathBuf {
        self.d.data_root.join("plugins")
    }

    /// Files outside the rootfs that an attempt wrote: anything new in `outside/`, anything
    /// named `pwned` anywhere under the daemon's directory but inside a plugin's rootfs.
    fn written_outside(&self) -> Vec<String> {
        let mut found = names_below(self.outside.path());
        found.retain(|n| n != "sentinel");
        let sentinel = std::fs::read(self.outside.path().join("sentinel")).unwrap();
        if sentinel != b"untouched" {
            found.push("sentinel (changed)".into());
        }
        for name in names_below(self.d.dir.path()) {
            if name.ends_with("pwned") && !name.contains("/rootfs/") {
                found.push(name);
            }
        }
        found
    }

    /// Nothing staged or half-written is left, and no plugin is recorded.
    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.d.plugin_names(""), Vec::<String>::new(), "{what}");
        for dir in ["tmp", "storage/ingest"] {
            let left = names_below(&self.plugins_root().join(dir));
            assert!(left.is_empty(), "{what}: left in {dir}: {left:?}");
        }
    }
}

/// Every path below `dir`, relative to it (empty when `dir` does not exist).
fn names_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn shapes(out: &str) -> Vec<Shape> {
    let climb = "../../../../../../../../../..";
    let shape = |name, tar: RawTar, want| Shape {
        name,
        tar: tar.bytes(),
        want,
        check: None,
    };
    let refused = |text| Outcome::Refused(500, text);
    let mut all = vec![
        shape(
            "dotdot",
            RawTar::plugin().file(&format!("rootfs/{climb}{out}/pwned"), 0o644, b"x"),
            refused("climbs above the root"),
        ),
        shape(
            "dotdot before rootfs",
            RawTar::plugin().file(&format!("{climb}{out}/pwned"), 0o644, b"x"),
            refused("climbs above the root"),
        ),
        shape(
            "symlink then a file through it",
            RawTar::plugin()
                .symlink("rootfs/link", out)
                .file("rootfs/link/pwned", 0o644, b"x"),
            refused("is a symbolic link; refusing to write through it"),
        ),
        shape(
            "relative symlink climbing out",
            RawTar::plugin()
                .symlink("rootfs/link", &format!("{climb}{out}"))
                .file("rootfs/link/pwned", 0o644, b"x"),
            refused("escapes the root"),
        ),
        shape(
            "symlink chain to outside, then a file through it",
            RawTar::plugin()
                .symlink("rootfs/a", "b")
                .symlink("rootfs/b", "c")
                .symlink("rootfs/c", out)
                .file("rootfs/a/pwned", 0o644, b"x"),
            refused("is a symbolic link; refusing to write through it"),
        ),
        shape(
            "symlink replaced by a directory of the same name, then written",
            RawTar::plugin()
                .symlink("rootfs/d", out)
                .entry(tar::EntryType::Directory, "rootfs/d/", "", 0o755, b"")
                .file("rootfs/d/pwned", 0o644, b"inside"),
            Outcome::Created,
        ),
        shape(
            "hardlink to an absolute host file",
            RawTar::plugin().hardlink("rootfs/h", &format!("{out}/sentinel")),
            refused("is outside rootfs/"),
        ),
        shape(
            "hardlink climbing out",
            RawTar::plugin().hardlink("rootfs/h", &format!("{climb}{out}/sentinel")),
            refused("climbs above the root"),
        ),
        shape(
            "hardlink through a symlink",
            RawTar::plugin()
                .symlink("rootfs/link", out)
                .hardlink("rootfs/h", "rootfs/link/sentinel"),
            refused("refusing unsafe tar entry"),
        ),
        shape(
            "sparse-file bomb (8 GiB, no data)",
            RawTar::plugin().sparse("rootfs/sparse", (8 << 30) - 1),
            refused("unsupported tar entry type 'S'"),
        ),
        shape(
            "a name longer than the file system allows",
            RawTar::plugin()
                .long_name(format!("rootfs/{}", "n".repeat(5000)).as_bytes())
                .file("placeholder", 0o644, b"x"),
            refused("File name too long"),
        ),
        Shape {
            name: "a long name announcing 512 MiB (read into memory by the tar reader)",
            tar: {
                let mut t = RawTar::plugin().bytes();
                t.truncate(t.len() - 1024);
                let h = raw_header(
                    tar::EntryType::GNULongName,
                    b"././@LongLink",
                    b"",
                    0o644,
                    512 << 20,
                );
                t.extend_from_slice(h.as_bytes());
                t.extend_from_slice(&[b'n'; 4096]);
                t
            },
            want: refused("a long name or PAX header of 536870912 bytes (at most 1048576)"),
            check: None,
        },
    ];
    all.push(Shape {
        name: "absolute paths are taken inside the rootfs",
        tar: RawTar::plugin()
            .file(&format!("/rootfs{out}/pwned"), 0o644, b"inside")
            .file(
                &format!("{out}/pwned"),
                0o644,
                b"ignored: not below rootfs/",
            )
            .bytes(),
        want: Outcome::Created,
        check: Some(|rootfs| {
            let found = names_below(rootfs);
            assert!(found.iter().any(|n| n.ends_with("/pwned")), "{found:?}");
        }),
    });
    all.push(Shape {
        name: "device nodes are skipped",
        tar: RawTar::plugin()
            .entry(tar::EntryType::Char, "rootfs/mem", "", 0o666, b"")
            .entry(tar::EntryType::Block, "rootfs/sda", "", 0o660, b"")
            .bytes(),
        want: Outcome::Created,
        check: Some(|rootfs| {
            assert!(!rootfs.join("mem").exists() && !rootfs.join("sda").exists());
        }),
    });
    all.push(Shape {
        name: "FIFOs are created",
        tar: RawTar::plugin()
            .entry(tar::EntryType::Fifo, "rootfs/fifo", "", 0o600, b"")
            .bytes(),
        want: Outcome::Created,
        check: Some(|rootfs| {
            let meta = std::fs::symlink_metadata(rootfs.join("fifo")).unwrap();
            assert!(meta.file_type().is_fifo());
        }),
    });
    all.push(Shape {
        name: "setuid and setgid bits are kept",
        tar: RawTar::plugin()
            .entry(tar::EntryType::Directory, "rootfs/bin/", "", 0o755, b"")
            .file("rootfs/bin/su", 0o4755, b"#!/bin/true\n")
            .file("rootfs/bin/sg", 0o2755, b"#!/bin/true\n")
            .bytes(),
        want: Outcome::Created,
        check: Some(|rootfs| {
            let mode = |n: &str| {
                std::fs::metadata(rootfs.join("bin").join(n))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777
            };
            assert_eq!((mode("su"), mode("sg")), (0o4755, 0o2755));
            let uid = std::fs::metadata(rootfs.join("bin/su")).unwrap().uid();
            assert_eq!(uid, 0, "owned as in the archive (root)");
        }),
    });
    all.push(Shape {
        name: "5000 headers for one name",
        tar: {
            let mut t = RawTar::plugin();
            for i in 0..5_000 {
                t = t.file("rootfs/same", 0o644, format!("{i}").as_bytes());
            }
            t.bytes()
        },
        want: Outcome::Created,
        check: Some(|rootfs| {
            assert_eq!(std::fs::read(rootfs.join("same")).unwrap(), b"4999");
        }),
    });
    all
}

#[test]
fn no_shape_writes_outside_the_rootfs_and_refused_ones_leave_nothing() {
    let c = Corpus::start(&[]);
    let mut attempts = 0;
    for (i, shape) in shapes(&c.out()).into_iter().enumerate() {
        let name = format!("corpus{i}");
        let started = Instant::now();
        let r = c.d.create_plugin(&name, &gzip(&shape.tar));
        attempts += 1;
        let took = started.elapsed();
        println!(
            "[corpus] {} ({took:?}): {} {}",
            shape.name,
            r.status,
            r.text().trim()
        );
        match shape.want {
            Outcome::Refused(status, text) => {
                assert_eq!(r.status, status, "{}: {}", shape.name, r.text());
                assert!(
                    r.message().contains(text),
                    "{}: {}",
                    shape.name,
                    r.message()
                );
                c.assert_nothing_left(shape.name);
            }
            Outcome::Created => {
                r.expect(204, shape.name);
                let id = c.d.plugin_id(&name);
                if let Some(check) = shape.check {
                    check(&c.plugins_root().join(&id).join("rootfs"));
                }
                c.d.remove_plugin(&name, false).expect(200, shape.name);
            }
        }
        let outside = c.written_outside();
        assert!(
            outside.is_empty(),
            "{}: written outside: {outside:?}",
            shape.name
        );
        assert!(
            took < Duration::from_secs(30),
            "{}: took {took:?}",
            shape.name
        );
    }
    println!("FIGURE tar-corpus attempts={attempts} written_outside=0");
    c.assert_nothing_left("after the corpus");
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit_with_nothing_left() {
    // 64 MiB floor: a 10 MB bomb expanding to ~10 GiB stops after 64 MiB.
    let c = Corpus::start(&["--max-unpacked-size", "67108864"]);
    let (bomb, expands_to) = gzip_bomb(RawTar::plugin(), "rootfs/bomb", 10 << 20);
    assert!(
        bomb.len() > 9 << 20 && expands_to > 9 << 30,
        "{} {expands_to}",
        bomb.len()
    );
    let started = Instant::now();
    let r = c.d.create_plugin("bomb", &bomb);
    let took = started.elapsed();
    println!(
        "[corpus] gzip bomb of {} bytes ({took:?}): {} {}",
        bomb.len(),
        r.status,
        r.text()
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_starts_with(
        &r.message(),
        "refusing an archive that unpacks to more than 67.11MB: the limit after ",
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    c.assert_nothing_left("bomb");
    assert_eq!(c.d.get("/_ping").status, 200);
    let peak = common::probes::peak_rss_mib(c.d.pid());
    println!(
        "FIGURE gzip-bomb compressed={} took_ms={} peak_rss_mib={peak}",
        bomb.len(),
        took.as_millis()
    );
    assert!(peak < 128, "peak RSS {peak} MiB");

    // Within the limit, the same daemon creates plugins as before.
    let fine = RawTar::plugin()
        .file("rootfs/data", 0o644, &vec![7u8; 1 << 20])
        .bytes();
    c.d.create_plugin("fine", &gzip(&fine)).expect(204, "fine");
}
