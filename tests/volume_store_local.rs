//! The built-in `local` volume driver (`src/volume/local.rs`): name and option checks with
//! dockerd 20.10's texts, the on-disk layout, mounts (tmpfs, bind, errors), remove of a
//! mounted volume, and restore after a crash. Mount tests need root (CI runs as root) and
//! are skipped otherwise.

mod common;
use common::opts;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth::volume::local::{
    mount_calls, mount_points, parse_mount_options, ram_in_bytes, resolve_ip,
    resolve_mount_options, LocalDriver, LocalError, MountOptions,
};

/// The text of a refusal, which must be the client's fault (a 400).
fn refusal(result: Result<(), LocalError>) -> Result<(), String> {
    result.map_err(|e| match e {
        LocalError::Invalid(m) => m,
        other => panic!("not a refusal of the request: {other:?}"),
    })
}

fn validate_name(name: &str) -> Result<(), String> {
    refusal(LocalDriver::validate_name(name))
}

fn validate_options(opts: &BTreeMap<String, String>) -> Result<(), String> {
    refusal(LocalDriver::validate_options(opts))
}

fn driver_in(root: &Root) -> LocalDriver {
    LocalDriver::new(&root.path().join("volumes"))
}

/// A data root under /tmp that unmounts whatever is still mounted below it before it is
/// deleted (so a failing test never deletes through a mount).
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::Builder::new()
                .prefix("berth-volstore-")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }
    fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).unwrap()
    }
    fn mounts(&self) -> Vec<PathBuf> {
        let me = self.path();
        mount_points()
            .unwrap()
            .into_iter()
            .filter(|p| p.starts_with(&me))
            .collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for _ in 0..8 {
            let mounts = self.mounts();
            if mounts.is_empty() {
                break;
            }
            for m in mounts.iter().rev() {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// `-o type=<kind> -o device=<device>`, and `-o o=<o>` unless empty.
fn local_opts(kind: &str, device: &str, o: &str) -> BTreeMap<String, String> {
    let mut pairs = vec![("type", kind), ("device", device)];
    if !o.is_empty() {
        pairs.push(("o", o));
    }
    opts(&pairs)
}

/// A data root and a driver on it, for tests that mount: only as root (else skipped).
fn mounting_driver() -> Option<(Root, LocalDriver)> {
    if !is_root() {
        return None;
    }
    let root = Root::new();
    let driver = driver_in(&root);
    Some((root, driver))
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("not root: mount test skipped");
    false
}

fn mountinfo_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    text.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(p))
        .map(str::to_string)
}

fn mount_count(path: &Path) -> usize {
    mount_points()
        .unwrap()
        .iter()
        .filter(|p| p.as_path() == path)
        .count()
}

// ---------------------------------------------------------------------------------------------
// Names and options (texts confirmed on dockerd 20.10.24)

const INVALID_TAIL: &str = r#" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path"#;

#[test]
fn name_rules_and_messages() {
    for ok in [
        "ab",
        "a.b-c_d",
        "0a",
        "A0",
        "x".repeat(255).as_str(),
        "a..",
        "a--",
    ] {
        validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert_eq!(
        validate_name("a").unwrap_err(),
        "volume name is too short, names should be at least two alphanumeric characters"
    );
    // One byte is "too short" even when it is not alphanumeric.
    assert_eq!(
        validate_name("/").unwrap_err(),
        "volume name is too short, names should be at least two alphanumeric characters"
    );
    for (name, quoted) in [
        ("a/b", r#""a/b""#),
        ("-x", r#""-x""#),
        ("_ab", r#""_ab""#),
        (".ab", r#"".ab""#),
        ("ab:c", r#""ab:c""#),
        ("é1", r#""é1""#),
        ("é", r#""é""#),
        ("ab\u{1}", r#""ab\x01""#),
        ("a\tb", r#""a\tb""#),
        ("", r#""""#),
        ("/abs/path", r#""/abs/path""#),
    ] {
        assert_eq!(
            validate_name(name).unwrap_err(),
            format!("{quoted}{INVALID_TAIL}"),
            "{name:?}"
        );
    }
}

#[test]
fn option_rules_and_messages() {
    for ok in [
        opts(&[]),
        local_opts("tmpfs", "tmpfs", ""),
        local_opts("tmpfs", "tmpfs", "size=1m"),
        local_opts("", "", ""),
        opts(&[("size", "0")]),
        opts(&[("size", "0.5")]),
        local_opts("cifs", "//host:445/share", ""),
    ] {
        validate_options(&ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("foo", "bar")], r#"invalid option: "foo""#),
        (&[("Type", "tmpfs")], r#"invalid option: "Type""#),
        (
            &[("type", "tmpfs"), ("device", "tmpfs"), ("foo", "1")],
            r#"invalid option: "foo""#,
        ),
        // dockerd names a random one of several; we name the first.
        (&[("b", "y"), ("a", "x")], r#"invalid option: "a""#),
        // Unknown keys are reported before anything else.
        (&[("foo", "1"), ("size", "abc")], r#"invalid option: "foo""#),
        (&[("type", "tmpfs")], r#"missing required option: "device""#),
        (&[("device", "tmpfs")], r#"missing required option: "type""#),
        (&[("o", "size=1m")], r#"missing required option: "device""#),
        (&[("o", "")], r#"missing required option: "device""#),
        (
            &[("o", "size=1m"), ("type", "tmpfs")],
            r#"missing required option: "device""#,
        ),
        (
            &[("o", "x"), ("device", "y")],
            r#"missing required option: "type""#,
        ),
        // Required options are checked before the size.
        (
            &[("type", "tmpfs"), ("size", "abc")],
            r#"missing required option: "device""#,
        ),
        (
            &[("size", "10m")],
            "quota size requested but no quota support",
        ),
        (
            &[("type", "tmpfs"), ("device", "tmpfs"), ("size", "1m")],
            "quota size requested but no quota support",
        ),
        (
            &[("size", "1.5k")],
            "quota size requested but no quota support",
        ),
        (
            &[("size", "10 mb")],
            "quota size requested but no quota support",
        ),
        (
            &[("size", "10MiB")],
            "quota size requested but no quota support",
        ),
    ];
    for (pairs, message) in cases {
        assert_eq!(
            validate_options(&opts(pairs)).unwrap_err(),
            *message,
            "{pairs:?}"
        );
    }
    // A size that does not parse (a 500 on dockerd 20.10, a 400 on current moby).
    for (size, message) in [
        ("abc", "invalid size: 'abc'"),
        ("", "invalid size: ''"),
        (" 1", "invalid size: ' 1'"),
        ("-1", "invalid size: '-1'"),
        ("1e3", "invalid size: '1e3'"),
        (
            "1.2.3",
            r#"strconv.ParseFloat: parsing "1.2.3": invalid syntax"#,
        ),
    ] {
        assert_eq!(
            validate_options(&opts(&[("size", size)])).unwrap_err(),
            message,
            "{size:?}"
        );
    }
}

#[test]
fn ram_in_bytes_is_go_units() {
    assert_eq!(ram_in_bytes("0"), Ok(0));
    assert_eq!(ram_in_bytes("10"), Ok(10));
    assert_eq!(ram_in_bytes("1k"), Ok(1024));
    assert_eq!(ram_in_bytes("1KiB"), Ok(1024));
    assert_eq!(ram_in_bytes("1.5k"), Ok(1536));
    assert_eq!(ram_in_bytes("2 MB"), Ok(2 << 20));
    assert_eq!(ram_in_bytes("1g"), Ok(1 << 30));
    assert_eq!(ram_in_bytes("1p"), Ok(1 << 50));
    assert_eq!(ram_in_bytes("0.5"), Ok(0));
    assert_eq!(
        ram_in_bytes("10x"),
        Err(LocalError::Invalid("invalid size: '10x'".to_string()))
    );
}

// ---------------------------------------------------------------------------------------------
// Mount option handling (pure)

#[test]
fn mount_options_split_into_flags_and_data_like_moby() {
    for (options, flags, data) in [
        ("", 0, ""),
        ("size=1m", 0, "size=1m"),
        ("ro,nosuid,size=1m,bogus", 0x3, "size=1m,bogus"),
        // `defaults` has no flag and so goes to the data (as in moby/sys/mount).
        ("defaults,size=1m", 0, "defaults,size=1m"),
        ("ro,rw", 0, ""),
        ("bind", 0x1000, ""),
        ("rbind,private,size=2m", 0x45000, "size=2m"),
        ("addr=1.2.3.4,ro,nfsvers=4", 0x1, "addr=1.2.3.4,nfsvers=4"),
    ] {
        assert_eq!(
            parse_mount_options(options),
            (flags, data.to_string()),
            "{options}"
        );
    }
}

#[test]
fn mount_calls_and_their_error_texts_match_dockerd() {
    let einval = std::io::Error::from_raw_os_error(nix::libc::EINVAL);
    let enoent = std::io::Error::from_raw_os_error(nix::libc::ENOENT);
    let enodev = std::io::Error::from_raw_os_error(nix::libc::ENODEV);
    let target = Path::new("/tmp/dk/data/volumes/vp3/_data");

    // One mount call each; its error as dockerd words it (`{target}` for the target).
    for (source, fstype, options, errno, text) in [
        (
            "tmpfs",
            "tmpfs",
            "ro,nosuid,size=1m,bogus",
            &einval,
            "mount tmpfs:{target}, flags: 0x3, data: size=1m,bogus: invalid argument",
        ),
        (
            "tmpfs",
            "tmpfs",
            "size=1m,bogus=1",
            &einval,
            "mount tmpfs:{target}, data: size=1m,bogus=1: invalid argument",
        ),
        (
            "foo",
            "nosuchfs",
            "",
            &enodev,
            "mount foo:{target}: no such device",
        ),
        (
            "/tmp/nonexist-dir",
            "none",
            "bind",
            &enoent,
            "mount /tmp/nonexist-dir:{target}, flags: 0x1000: no such file or directory",
        ),
    ] {
        let calls = mount_calls(source, target, fstype, options);
        assert_eq!(calls.len(), 1, "{options}");
        let text = text.replace("{target}", target.to_str().unwrap());
        assert_eq!(calls[0].error_text(errno), text);
    }

    // Propagation flags are a second call and are not shown on the first.
    let calls = mount_calls("tmpfs", target, "tmpfs", "rbind,private,size=2m,bogus");
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].error_text(&enoent),
        "mount tmpfs:/tmp/dk/data/volumes/vp3/_data, flags: 0x5000, data: size=2m,bogus: no such file or directory"
    );
    assert_eq!(calls[1].op, "remount");
    assert_eq!(calls[1].flags, 0x44000);
    assert_eq!(
        calls[1].error_text(&einval),
        "remount /tmp/dk/data/volumes/vp3/_data, flags: 0x44000: invalid argument"
    );

    // A read-only bind needs a remount to become read-only.
    let calls = mount_calls("/src", target, "none", "bind,ro");
    assert_eq!(
        calls.iter().map(|c| (c.op, c.flags)).collect::<Vec<_>>(),
        [("mount", 0x1001), ("remount-ro", 0x1021)]
    );
    // A bare remount with no data does nothing (as in moby).
    assert!(mount_calls("x", target, "tmpfs", "remount,ro").is_empty());
}

#[test]
fn nfs_addr_names_are_resolved_and_other_types_left_alone() {
    let fake = |host: &str| -> Result<std::net::IpAddr, LocalError> {
        match host {
            "nfs.example" => Ok("192.0.2.7".parse().unwrap()),
            "::1" => Ok("::1".parse().unwrap()),
            _ => Err(LocalError::Failed(format!("lookup {host}: no such host"))),
        }
    };
    let o = |t: &str, dev: &str, opts: &str| MountOptions {
        mount_type: t.into(),
        mount_device: dev.into(),
        mount_opts: opts.into(),
        ..Default::default()
    };
    assert_eq!(
        resolve_mount_options(&o("nfs", ":/export", "addr=nfs.example,rw"), fake).unwrap(),
        (":/export".into(), "addr=192.0.2.7,rw".into())
    );
    assert_eq!(
        resolve_mount_options(&o("nfs", ":/export", "addr=127.0.0.1,ro"), |_| {
            panic!("IPv4 literals are not resolved")
        })
        .unwrap()
        .1,
        "addr=127.0.0.1,ro"
    );
    assert_eq!(
        resolve_mount_options(&o("nfs", ":/e", "addr=::1"), fake)
            .unwrap()
            .1,
        "addr=::1"
    );
    assert_eq!(
        resolve_mount_options(&o("tmpfs", "tmpfs", "addr=nfs.example"), |_| {
            panic!("only nfs is resolved")
        })
        .unwrap()
        .1,
        "addr=nfs.example"
    );
    assert_eq!(
        resolve_mount_options(&o("nfs", ":/e", "addr=nosuch.invalid"), fake)
            .unwrap_err()
            .to_string(),
        "error resolving passed in network volume address: lookup nosuch.invalid: no such host"
    );
    assert_eq!(
        resolve_mount_options(&o("tmpfs", "", "size=1m"), fake)
            .unwrap_err()
            .to_string(),
        "missing device in volume options"
    );
    // The real resolver: literals as they are, names through the system resolver.
    assert_eq!(resolve_ip("10.1.2.3").unwrap().to_string(), "10.1.2.3");
    assert!(resolve_ip("localhost").unwrap().is_loopback());
    let err = resolve_ip("nosuch.invalid").unwrap_err().to_string();
    assert!(err.starts_with("lookup nosuch.invalid"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Layout, create, remove, usage, restore

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_lays_out_the_volume_like_dockerd_and_is_idempotent() {
    let root = Root::new();
    let driver = driver_in(&root);
    let volumes = root.path().join("volumes");
    assert_eq!(driver.root(), volumes);
    assert_eq!(mode(&volumes), 0o701);

    let mp = driver.create("plain", &opts(&[])).unwrap();
    assert_eq!(mp, volumes.join("plain/_data"));
    assert_eq!(driver.mountpoint("plain"), mp);
    assert_eq!(mode(&volumes.join("plain")), 0o701);
    assert_eq!(mode(&mp), 0o755);
    assert!(!volumes.join("plain/opts.json").exists());

    let mp = driver
        .create(
            "withopts",
            &local_opts("tmpfs", "tmpfs", "size=1m,uid=1000"),
        )
        .unwrap();
    assert!(mp.is_dir());
    let opts_json = volumes.join("withopts/opts.json");
    assert_eq!(
        fs::read_to_string(&opts_json).unwrap(),
        r#"{"MountType":"tmpfs","MountOpts":"size=1m,uid=1000","MountDevice":"tmpfs","Quota":{"Size":0}}"#
    );
    assert_eq!(mode(&opts_json), 0o600);
    assert_eq!(
        driver.options("withopts").unwrap().mount_opts,
        "size=1m,uid=1000"
    );
    assert_eq!(driver.options("plain"), None);

    // Idempotent: same path, data kept, options of the first create kept.
    fs::write(mp.join("f"), b"data").unwrap();
    assert_eq!(driver.create("withopts", &opts(&[])).unwrap(), mp);
    assert_eq!(fs::read(mp.join("f")).unwrap(), b"data");
    assert!(opts_json.exists());

    assert_eq!(driver.list(), ["plain", "withopts"]);
    assert!(driver.exists("plain"));
    assert!(!driver.exists("nothing"));
    // No temporary directories are left behind.
    let mut entries: Vec<_> = fs::read_dir(&volumes)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["plain", "withopts"]);
}

#[test]
fn create_checks_name_and_options_first() {
    let root = Root::new();
    let driver = driver_in(&root);
    assert_eq!(
        refusal(driver.create("a", &opts(&[])).map(|_| ())).unwrap_err(),
        "volume name is too short, names should be at least two alphanumeric characters"
    );
    assert_eq!(
        refusal(driver.create("a/b", &opts(&[])).map(|_| ())).unwrap_err(),
        format!(r#""a/b"{INVALID_TAIL}"#)
    );
    assert_eq!(
        refusal(driver.create("ok", &opts(&[("foo", "bar")])).map(|_| ())).unwrap_err(),
        r#"invalid option: "foo""#
    );
    assert_eq!(
        refusal(driver.create("ok", &opts(&[("size", "abc")])).map(|_| ())).unwrap_err(),
        "invalid size: 'abc'"
    );
    assert!(!driver.exists("ok"));
    // A name the file system refuses: dockerd's text, a 500.
    let long = "a".repeat(300);
    let dir = driver.root().join(&long);
    assert_eq!(
        driver.create(&long, &opts(&[])).unwrap_err(),
        LocalError::Failed(format!(
            "error while creating volume root path '{}': mkdir {}: file name too long",
            dir.display(),
            dir.display()
        ))
    );
    assert_eq!(fs::read_dir(driver.root()).unwrap().count(), 0);
}

#[test]
fn create_adopts_a_directory_already_on_disk() {
    let root = Root::new();
    let volumes = root.path().join("volumes");
    fs::create_dir_all(volumes.join("leftover/_data")).unwrap();
    fs::write(volumes.join("leftover/_data/f"), b"x").unwrap();
    fs::write(
        volumes.join("leftover/opts.json"),
        br#"{"MountType":"tmpfs","MountOpts":"","MountDevice":"tmpfs","Quota":{"Size":0}}"#,
    )
    .unwrap();
    // Not known yet (no restore), but on disk: the directory is reused, the stale opts go.
    let driver = driver_in(&root);
    let mp = driver.create("leftover", &opts(&[])).unwrap();
    assert_eq!(fs::read(mp.join("f")).unwrap(), b"x");
    assert!(!volumes.join("leftover/opts.json").exists());
    assert_eq!(driver.options("leftover"), None);
}

#[test]
fn create_remakes_a_known_volume_deleted_behind_its_back() {
    let root = Root::new();
    let driver = driver_in(&root);
    let mp = driver.create("vanish", &opts(&[])).unwrap();
    fs::remove_dir_all(driver.root().join("vanish")).unwrap();
    assert_eq!(driver.create("vanish", &opts(&[])).unwrap(), mp);
    assert!(mp.is_dir());
}

#[test]
fn remove_deletes_the_volume_and_tolerates_missing_ones() {
    let root = Root::new();
    let driver = driver_in(&root);
    let mp = driver.create("gone", &opts(&[])).unwrap();
    fs::create_dir_all(mp.join("a/b")).unwrap();
    fs::write(mp.join("a/b/c"), b"1234").unwrap();
    driver.remove("gone").unwrap();
    assert!(!driver.root().join("gone").exists());
    assert!(!driver.exists("gone"));
    assert_eq!(fs::read_dir(driver.root()).unwrap().count(), 0);
    // Not there at all, and deleted behind the driver's back: both fine.
    driver.remove("never").unwrap();
    driver.create("behind", &opts(&[])).unwrap();
    fs::remove_dir_all(driver.root().join("behind")).unwrap();
    driver.remove("behind").unwrap();
    assert!(driver.list().is_empty());
    // And the name can be created again.
    driver.create("behind", &opts(&[])).unwrap();
}

#[test]
fn usage_counts_file_bytes_once_per_inode() {
    let root = Root::new();
    let driver = driver_in(&root);
    let mp = driver.create("sized", &opts(&[])).unwrap();
    assert_eq!(driver.usage("sized"), 0);
    fs::write(mp.join("a"), vec![0u8; 1000]).unwrap();
    fs::create_dir_all(mp.join("d/e")).unwrap();
    fs::write(mp.join("d/e/b"), vec![0u8; 234]).unwrap();
    fs::write(mp.join("empty"), b"").unwrap();
    fs::hard_link(mp.join("a"), mp.join("d/a-link")).unwrap();
    std::os::unix::fs::symlink("a", mp.join("sym")).unwrap(); // counts its own length (1)
    assert_eq!(driver.usage("sized"), 1000 + 234 + 1);
    assert_eq!(driver.usage("nothing"), 0);
}

#[test]
fn restore_learns_volumes_and_sweeps_leftovers() {
    let root = Root::new();
    let volumes = root.path().join("volumes");
    {
        let driver = driver_in(&root);
        driver.create("one", &opts(&[])).unwrap();
        driver
            .create("two", &local_opts("tmpfs", "tmpfs", ""))
            .unwrap();
    }
    // What a crash in create or remove leaves, and things that are no volumes.
    fs::create_dir_all(volumes.join(".creating-0011223344556677/_data")).unwrap();
    fs::create_dir_all(volumes.join(".removing-8899aabbccddeeff/_data/x")).unwrap();
    fs::create_dir_all(volumes.join("lost+found")).unwrap();
    fs::write(volumes.join("metadata.db"), b"not a dir").unwrap();
    fs::create_dir_all(volumes.join("badopts/_data")).unwrap();
    fs::write(volumes.join("badopts/opts.json"), b"{not json").unwrap();

    let driver = driver_in(&root);
    assert_eq!(driver.restore().unwrap(), ["badopts", "one", "two"]);
    assert_eq!(driver.list(), ["badopts", "one", "two"]);
    assert!(!volumes.join(".creating-0011223344556677").exists());
    assert!(!volumes.join(".removing-8899aabbccddeeff").exists());
    assert!(volumes.join("lost+found").exists());
    assert_eq!(driver.options("two").unwrap().mount_type, "tmpfs");
    // A volume whose options cannot be read cannot be mounted, and says why.
    let err = driver.mount("badopts").unwrap_err().to_string();
    assert!(
        err.starts_with("error while unmarshaling volume options for volume: badopts: "),
        "{err}"
    );
    // Plain volumes need no mount.
    assert_eq!(driver.mount("one").unwrap(), driver.mountpoint("one"));
    driver.unmount("one").unwrap();
    assert_eq!(
        driver.mount("nothing"),
        Err(LocalError::Failed("volume not found".to_string()))
    );
}

// ---------------------------------------------------------------------------------------------
// Mounts (root)

#[test]
fn tmpfs_volume_mounts_with_its_size_and_unmounts() {
    let Some((_root, driver)) = mounting_driver() else {
        return;
    };
    let mp = driver
        .create("tmp", &local_opts("tmpfs", "tmpfs", "size=1m,uid=1000"))
        .unwrap();
    assert!(!driver.is_mounted("tmp"));
    assert_eq!(driver.mount("tmp").unwrap(), mp);
    assert!(driver.is_mounted("tmp"));
    let line = mountinfo_line(&mp).expect("in mountinfo");
    assert!(line.contains(" - tmpfs tmpfs "), "{line}");
    assert!(line.contains("size=1024k"), "{line}");
    assert!(line.contains("uid=1000"), "{line}");
    // Mounting again is a no-op (the service counts users; we only do first use).
    driver.mount("tmp").unwrap();
    assert_eq!(mount_count(&mp), 1);
    fs::write(mp.join("f"), b"in tmpfs").unwrap();

    driver.unmount("tmp").unwrap();
    assert!(!driver.is_mounted("tmp"));
    assert!(mountinfo_line(&mp).is_none());
    assert!(!mp.join("f").exists(), "file was in the tmpfs");
    driver.unmount("tmp").unwrap(); // not mounted: fine
    driver.remove("tmp").unwrap();
}

#[test]
fn bind_volume_shows_the_host_directory_and_remove_leaves_it_alone() {
    let Some((root, driver)) = mounting_driver() else {
        return;
    };
    let host = Root::new();
    let host_dir = host.path().join("share");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("precious"), b"keep me").unwrap();
    let mp = driver
        .create(
            "bound",
            &local_opts("none", host_dir.to_str().unwrap(), "bind"),
        )
        .unwrap();
    driver.mount("bound").unwrap();
    assert_eq!(fs::read(mp.join("precious")).unwrap(), b"keep me");
    fs::write(mp.join("written"), b"through the volume").unwrap();
    assert!(host_dir.join("written").exists());

    // Remove while mounted: unmounts first, never deletes through the mount.
    driver.remove("bound").unwrap();
    assert!(mountinfo_line(&mp).is_none());
    assert!(!driver.root().join("bound").exists());
    assert_eq!(fs::read(host_dir.join("precious")).unwrap(), b"keep me");
    assert!(host_dir.join("written").exists());
    assert!(root.mounts().is_empty());
}

#[test]
fn read_only_bind_gets_remounted_read_only() {
    let Some((_root, driver)) = mounting_driver() else {
        return;
    };
    let host = Root::new();
    let mp = driver
        .create(
            "robind",
            &local_opts("none", host.path().to_str().unwrap(), "bind,ro"),
        )
        .unwrap();
    driver.mount("robind").unwrap();
    let line = mountinfo_line(&mp).unwrap();
    assert!(line.split(' ').nth(5).unwrap().starts_with("ro"), "{line}");
    assert!(fs::write(mp.join("x"), b"x").is_err());
    driver.unmount("robind").unwrap();
    assert!(!driver.is_mounted("robind"));
}

#[test]
fn mount_failures_read_like_dockerd() {
    let Some((root, driver)) = mounting_driver() else {
        return;
    };
    // (volume, type, device, o, the mount error with {dir} for the volume's directory)
    let cases = [
        (
            "badtype",
            "nosuchfs",
            "foo",
            "",
            "mount foo:{dir}: no such device",
        ),
        (
            "baddata",
            "tmpfs",
            "tmpfs",
            "size=1m,bogus=1",
            "mount tmpfs:{dir}, data: size=1m,bogus=1: invalid argument",
        ),
        (
            "badflags",
            "tmpfs",
            "tmpfs",
            "ro,nosuid,size=1m,bogus",
            "mount tmpfs:{dir}, flags: 0x3, data: size=1m,bogus: invalid argument",
        ),
        (
            "badbind",
            "none",
            "/nonexistent-berth-dir",
            "bind",
            "mount /nonexistent-berth-dir:{dir}, flags: 0x1000: no such file or directory",
        ),
        (
            "notblock",
            "ext4",
            "/etc/hostname",
            "",
            "mount /etc/hostname:{dir}: block device required",
        ),
        (
            "secret",
            "nosuchfs",
            "x",
            "user=u,password=hunter2",
            "mount x:{dir}, data: user=u,password=********: no such device",
        ),
    ];
    for (name, kind, device, o, expected) in cases {
        driver.create(name, &local_opts(kind, device, o)).unwrap();
        let dir = driver.mountpoint(name);
        let err = driver.mount(name).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "failed to mount local volume: {}",
                expected.replace("{dir}", dir.to_str().unwrap())
            ),
            "{name}"
        );
        assert!(!driver.is_mounted(name));
        driver.remove(name).unwrap();
    }
    // Type without device: dockerd accepts the create and fails the mount.
    driver
        .create("nodev", &local_opts("tmpfs", "", ""))
        .unwrap();
    assert_eq!(
        driver.mount("nodev").unwrap_err().to_string(),
        "missing device in volume options"
    );
    assert!(root.mounts().is_empty());
}

#[test]
fn restore_after_a_crash_leaves_nothing_mounted() {
    if !is_root() {
        return;
    }
    let root = Root::new();
    let tmpfs = local_opts("tmpfs", "tmpfs", "size=1m");
    {
        let driver = driver_in(&root);
        driver.create("crash1", &tmpfs).unwrap();
        driver.create("crash2", &tmpfs).unwrap();
        driver.create("plain", &opts(&[])).unwrap();
        driver.mount("crash1").unwrap();
        driver.mount("crash2").unwrap();
        // A second, stacked mount, as repeated crashes without restore could leave.
        nix::mount::mount(
            Some("tmpfs"),
            &driver.mountpoint("crash2"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        assert_eq!(root.mounts().len(), 3);
        // The driver goes away without unmounting: the daemon died.
    }
    let driver = driver_in(&root);
    assert_eq!(driver.restore().unwrap(), ["crash1", "crash2", "plain"]);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(!driver.is_mounted("crash1"));
    // Usable again.
    driver.mount("crash1").unwrap();
    assert!(driver.is_mounted("crash1"));
    driver.remove("crash1").unwrap();
    assert!(root.mounts().is_empty());
}
