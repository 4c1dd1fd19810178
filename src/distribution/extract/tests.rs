//! The public entry points end to end: happy paths, hostile tars, corrupt input and registry
//! layers. Every hostile case also checks that nothing outside the target changed.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::writer::{copy_field, pax_record};
use super::*;

const MTIME: u64 = 1_600_000_000;

/// Builds tars in memory, writing names and link names raw so hostile shapes are possible.
struct T {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: EntryType, name: &[u8], mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    copy_field(&mut h.as_old_mut().name, name);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(nix::unistd::geteuid().as_raw() as u64);
    h.set_gid(nix::unistd::getegid().as_raw() as u64);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

impl T {
    fn new() -> Self {
        T {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn raw(mut self, mut h: Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    fn config(self, name: &str, json: &str) -> Self {
        let h = header(
            EntryType::Regular,
            name.as_bytes(),
            0o644,
            json.len() as u64,
        );
        self.raw(h, json.as_bytes())
    }
    fn dir(self, name: &str, mode: u32) -> Self {
        self.raw(header(EntryType::Directory, name.as_bytes(), mode, 0), b"")
    }
    fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        let h = header(EntryType::Regular, name.as_bytes(), mode, data.len() as u64);
        self.raw(h, data)
    }
    fn link(self, kind: EntryType, name: &str, target: &str) -> Self {
        let mut h = header(kind, name.as_bytes(), 0o777, 0);
        copy_field(&mut h.as_old_mut().linkname, target.as_bytes());
        self.raw(h, b"")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.link(EntryType::Symlink, name, target)
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(EntryType::Link, name, target)
    }
    fn special(self, kind: EntryType, name: &str) -> Self {
        self.raw(header(kind, name.as_bytes(), 0o644, 0), b"")
    }
    fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A scratch area: `root/` is the (empty) rootfs target, `outside/` must stay untouched.
struct Scratch {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn scratch() -> Scratch {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"secret").unwrap();
    Scratch {
        _tmp: tmp,
        root,
        outside,
    }
}

impl Scratch {
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("passwd").to_owned()]);
        assert_eq!(fs::read(self.outside.join("passwd")).unwrap(), b"secret");
        let parent: Vec<_> = fs::read_dir(self.root.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            parent.len(),
            2,
            "unexpected files next to the rootfs: {parent:?}"
        );
    }
}

fn run(s: &Scratch, tar: &[u8]) -> (Result<CreateContext, ExtractError>, Vec<u8>) {
    let mut layer = Vec::new();
    let res = unpack_create_context(tar, &s.root, &mut layer, UnpackLimit::default());
    (res, layer)
}

/// The message of an `Unsafe` failure; panics on anything else.
fn unsafe_message<T: std::fmt::Debug>(res: Result<T, ExtractError>) -> String {
    match res {
        Err(ExtractError::Unsafe(msg)) => msg,
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

fn expect_unsafe(tar: Vec<u8>, needle: &str) -> Scratch {
    let s = scratch();
    let msg = unsafe_message(run(&s, &tar).0);
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    s.assert_outside_untouched();
    s
}

/// (name, type, mode, link name, data) of every entry of a gzip layer.
type LayerEntry = (String, EntryType, u32, Option<String>, Vec<u8>);

fn layer_names(layer: &[u8]) -> Vec<String> {
    layer_entries(layer).into_iter().map(|e| e.0).collect()
}

fn layer_entries(layer: &[u8]) -> Vec<LayerEntry> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, kind, mode, link, data)
        })
        .collect()
}

// ---- happy paths -----------------------------------------------------------------------

fn happy_tar() -> Vec<u8> {
    T::new()
        .config("config.json", r#"{"description":"x"}"#)
        .dir("rootfs/", 0o750)
        .dir("rootfs/bin/", 0o755)
        .file("rootfs/bin/busybox", 0o755, b"#!busybox")
        .file("rootfs/bin/suid", 0o4755, b"suid")
        .hardlink("rootfs/bin/hard", "rootfs/bin/busybox")
        .symlink("rootfs/bin/sh", "busybox")
        .symlink("rootfs/hosts", "/etc/hosts")
        .dir("rootfs/etc/", 0o700)
        .file("rootfs/etc/conf", 0o600, b"k=v")
        .special(EntryType::Fifo, "rootfs/run/fifo")
        .dir("rootfs/empty/", 0o1777)
        .bytes()
}

fn check_happy_tree(root: &Path) {
    let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(fs::metadata(root).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(md("bin").mode() & 0o7777, 0o755);
    assert!(md("bin").is_dir());
    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"#!busybox");
    assert_eq!(md("bin/busybox").mode() & 0o7777, 0o755);
    assert_eq!(md("bin/suid").mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!(md("bin/hard").ino(), md("bin/busybox").ino());
    assert!(md("bin/sh").file_type().is_symlink());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_link(root.join("hosts")).unwrap(),
        Path::new("/etc/hosts")
    );
    assert_eq!(md("etc").mode() & 0o7777, 0o700);
    assert_eq!(md("etc/conf").mode() & 0o7777, 0o600);
    assert!(md("run/fifo").file_type().is_fifo());
    assert_eq!(
        md("run").mode() & 0o7777,
        0o755,
        "implicit parents are 0755"
    );
    assert_eq!(md("empty").mode() & 0o7777, 0o1777);
    for p in [
        "bin",
        "bin/busybox",
        "bin/sh",
        "etc",
        "etc/conf",
        "run/fifo",
        "empty",
    ] {
        assert_eq!(md(p).mtime() as u64, MTIME, "mtime of {p}");
    }
    assert_eq!(fs::metadata(root).unwrap().mtime() as u64, MTIME);
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(md("bin/busybox").uid(), uid);
    assert_eq!(md("bin/sh").uid(), uid);
}

#[test]
fn happy_path_plain_tar() {
    let s = scratch();
    let (res, layer) = run(&s, &happy_tar());
    let ctx = res.unwrap();
    assert_eq!(ctx.config_json, br#"{"description":"x"}"#);
    assert_eq!(ctx.layer_size, layer.len() as u64);
    assert_eq!(
        ctx.layer_digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&layer)))
    );
    check_happy_tree(&s.root);
    s.assert_outside_untouched();

    let entries = layer_entries(&layer);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "./",
            "bin/",
            "bin/busybox",
            "bin/suid",
            "bin/hard",
            "bin/sh",
            "hosts",
            "etc/",
            "etc/conf",
            "run/fifo",
            "empty/"
        ]
    );
    let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
    assert_eq!(get("./").2, 0o750);
    assert_eq!(get("bin/busybox").4, b"#!busybox");
    assert_eq!(get("bin/suid").2, 0o4755);
    assert_eq!(get("bin/hard").1, EntryType::Link);
    assert_eq!(get("bin/hard").3.as_deref(), Some("bin/busybox"));
    assert_eq!(get("bin/sh").3.as_deref(), Some("busybox"));
    assert_eq!(get("hosts").3.as_deref(), Some("/etc/hosts"));
    assert_eq!(get("run/fifo").1, EntryType::Fifo);
    assert_eq!(get("empty/").2, 0o1777);
}

#[test]
fn happy_path_gzip_tar() {
    let s = scratch();
    let (res, layer) = run(&s, &gzip(&happy_tar()));
    let ctx = res.unwrap();
    assert_eq!(ctx.config_json, br#"{"description":"x"}"#);
    assert_eq!(ctx.layer_size, layer.len() as u64);
    check_happy_tree(&s.root);
}

#[test]
fn layer_is_deterministic_and_reapplies() {
    let s1 = scratch();
    let s2 = scratch();
    let (r1, l1) = run(&s1, &happy_tar());
    let (r2, l2) = run(&s2, &gzip(&happy_tar()));
    assert_eq!(r1.unwrap().layer_digest, r2.unwrap().layer_digest);
    assert_eq!(l1, l2);
    // The re-packed layer is itself a valid, safe layer giving the same tree.
    let s3 = scratch();
    unpack_layer(&l1[..], &s3.root, UnpackLimit::default()).unwrap();
    check_happy_tree(&s3.root);
}

#[test]
fn ownership_is_preserved_when_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut h = header(EntryType::Regular, b"rootfs/owned", 0o4750, 1);
    h.set_uid(1234);
    h.set_gid(4321);
    let mut l = header(EntryType::Symlink, b"rootfs/l", 0o777, 0);
    copy_field(&mut l.as_old_mut().linkname, b"owned");
    l.set_uid(77);
    l.set_gid(88);
    let tar = T::new()
        .config("config.json", "{}")
        .raw(h, b"x")
        .raw(l, b"")
        .bytes();
    let s = scratch();
    let (res, layer) = run(&s, &tar);
    res.unwrap();
    let md = fs::symlink_metadata(s.root.join("owned")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 4321));
    assert_eq!(md.mode() & 0o7777, 0o4750, "chown must not clear setuid");
    let md = fs::symlink_metadata(s.root.join("l")).unwrap();
    assert_eq!((md.uid(), md.gid()), (77, 88));
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    let e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        (e.header().uid().unwrap(), e.header().gid().unwrap()),
        (1234, 4321)
    );
}

#[test]
fn long_names_and_xattrs_are_repacked() {
    let long_dir = format!("rootfs/{}/", "d".repeat(90));
    let long_file = format!("{long_dir}{}", "f".repeat(60));
    let long_target = format!("/{}", "t".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::Directory, b"", 0o755, 0);
    b.append_data(&mut h, &long_dir, &b""[..]).unwrap();
    let mut h = header(EntryType::Regular, b"", 0o644, 2);
    b.append_data(&mut h, &long_file, &b"hi"[..]).unwrap();
    let mut h = header(EntryType::Symlink, b"", 0o777, 0);
    b.append_link(&mut h, "rootfs/long-link", &long_target)
        .unwrap();
    // A PAX header carrying an xattr for the next entry.
    let rec = pax_record(b"SCHILY.xattr.user.berth=yes\n");
    let mut x = header(
        EntryType::XHeader,
        b"././@PaxHeader",
        0o644,
        rec.len() as u64,
    );
    x.set_cksum();
    b.append(&x, &rec[..]).unwrap();
    let mut h = header(EntryType::Regular, b"rootfs/attr", 0o644, 1);
    h.set_cksum();
    b.append(&h, &b"a"[..]).unwrap();
    let mut h = header(EntryType::Regular, b"config.json", 0o644, 2);
    h.set_cksum();
    b.append(&h, &b"{}"[..]).unwrap();
    let tar = b.into_inner().unwrap();

    let s = scratch();
    let (res, layer) = run(&s, &tar);
    res.unwrap();
    let rel_file = long_file.strip_prefix("rootfs/").unwrap();
    assert_eq!(fs::read(s.root.join(rel_file)).unwrap(), b"hi");
    assert_eq!(
        fs::read_link(s.root.join("long-link")).unwrap(),
        Path::new(&long_target)
    );
    let entries = layer_entries(&layer);
    assert_eq!(entries[0].0, long_dir.strip_prefix("rootfs/").unwrap());
    assert_eq!(entries[1].0, rel_file);
    assert_eq!(entries[2].3.as_deref(), Some(long_target.as_str()));

    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    let mut e = ar.entries().unwrap().nth(3).unwrap().unwrap();
    assert_eq!(&*e.path_bytes(), b"attr");
    let exts: Vec<(Vec<u8>, Vec<u8>)> = e
        .pax_extensions()
        .unwrap()
        .unwrap()
        .map(|x| {
            let x = x.unwrap();
            (x.key_bytes().to_vec(), x.value_bytes().to_vec())
        })
        .collect();
    assert_eq!(
        exts,
        vec![(b"SCHILY.xattr.user.berth".to_vec(), b"yes".to_vec())]
    );
}

#[test]
fn config_path_variants_last_wins() {
    for name in ["config.json", "./config.json", "/config.json"] {
        let s = scratch();
        let tar = T::new()
            .dir("rootfs/", 0o755)
            .config(name, "{\"a\":1}")
            .bytes();
        assert_eq!(run(&s, &tar).0.unwrap().config_json, b"{\"a\":1}", "{name}");
    }
    let s = scratch();
    let tar = T::new()
        .config("config.json", "first")
        .dir("./rootfs/", 0o755)
        .config("/config.json", "second")
        .config("./config.json", "third")
        .config("rootfs/config.json", "inside rootfs, not a config")
        .config("sub/config.json", "ignored")
        .bytes();
    assert_eq!(run(&s, &tar).0.unwrap().config_json, b"third");
    assert_eq!(
        fs::read(s.root.join("config.json")).unwrap(),
        b"inside rootfs, not a config"
    );
}

#[test]
fn missing_config() {
    let s = scratch();
    let tar = T::new()
        .file("rootfs/a", 0o644, b"a")
        .file("other", 0o644, b"x")
        .bytes();
    assert_eq!(run(&s, &tar).0.unwrap_err(), ExtractError::NoConfig);
}

#[test]
fn missing_rootfs_reported_before_missing_config() {
    let s = scratch();
    let tar = T::new()
        .config("config.json", "{}")
        .file("rootfsx/a", 0o644, b"a")
        .bytes();
    assert_eq!(run(&s, &tar).0.unwrap_err(), ExtractError::NoRootfs);
    let tar = T::new().file("readme", 0o644, b"a").bytes();
    assert_eq!(run(&s, &tar).0.unwrap_err(), ExtractError::NoRootfs);
    assert_eq!(run(&s, &[][..]).0.unwrap_err(), ExtractError::NoRootfs);
    assert_eq!(ExtractError::NoRootfs.to_string(), "no rootfs found: EOF");
}

#[test]
fn empty_rootfs_dir_counts_as_rootfs() {
    let s = scratch();
    let tar = T::new()
        .config("config.json", "{}")
        .dir("rootfs", 0o755)
        .bytes();
    let (res, layer) = run(&s, &tar);
    res.unwrap();
    assert_eq!(layer_names(&layer), ["./"]);
}

#[test]
fn rootfs_entry_must_be_a_directory() {
    expect_unsafe(
        T::new()
            .symlink("rootfs", "/")
            .config("config.json", "{}")
            .bytes(),
        "must be a directory",
    );
}

// ---- hostile tars ----------------------------------------------------------------------

#[test]
fn dotdot_climb_is_refused() {
    expect_unsafe(
        T::new()
            .config("config.json", "{}")
            .file("rootfs/../../outside/passwd", 0o644, b"pwned")
            .bytes(),
        "rootfs/../../outside/passwd",
    );
    expect_unsafe(
        T::new()
            .dir("rootfs/", 0o755)
            .file("rootfs/a/../../../x", 0o644, b"pwned")
            .bytes(),
        "climbs above the root",
    );
    expect_unsafe(T::new().file("../config.json", 0o644, b"{}").bytes(), "..");
}

#[test]
fn dotdot_within_the_root_is_fine() {
    let s = scratch();
    let tar = T::new()
        .config("config.json", "{}")
        .file("rootfs/a/../b", 0o644, b"b")
        .file("rootfs/../ignored", 0o644, b"x")
        .bytes();
    run(&s, &tar).0.unwrap();
    assert_eq!(fs::read(s.root.join("b")).unwrap(), b"b");
    assert!(
        !s.root.join("a").exists(),
        "names are cleaned lexically first"
    );
    s.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_neutralised() {
    let s = scratch();
    let outside = s.outside.join("passwd");
    let tar = T::new()
        .config("/config.json", "{}")
        .file("/rootfs/etc/passwd", 0o644, b"inside")
        .file(outside.to_str().unwrap(), 0o644, b"pwned")
        .file("//rootfs//abs", 0o644, b"abs")
        .bytes();
    let (res, layer) = run(&s, &tar);
    res.unwrap();
    assert_eq!(fs::read(s.root.join("etc/passwd")).unwrap(), b"inside");
    assert_eq!(fs::read(s.root.join("abs")).unwrap(), b"abs");
    s.assert_outside_untouched();
    assert_eq!(layer_names(&layer), ["etc/passwd", "abs"]);
}

#[test]
fn relative_symlink_escape_is_refused() {
    expect_unsafe(
        T::new()
            .config("config.json", "{}")
            .symlink("rootfs/evil", "../outside")
            .bytes(),
        "escapes the root",
    );
    expect_unsafe(
        T::new()
            .symlink("rootfs/a/b/evil", "../../../../etc/passwd")
            .bytes(),
        "\"../../../../etc/passwd\"",
    );
}

#[test]
fn symlink_parent_is_never_written_through() {
    let s = scratch();
    let outside = s.outside.to_str().unwrap().to_string();
    let tar = T::new()
        .config("config.json", "{}")
        .symlink("rootfs/link", &outside)
        .file("rootfs/link/passwd", 0o644, b"pwned")
        .bytes();
    let msg = unsafe_message(run(&s, &tar).0);
    assert!(
        msg.contains("rootfs/link/passwd") && msg.contains("symbolic link"),
        "{msg}"
    );
    s.assert_outside_untouched();

    // Deeper: a directory under the symlink must not be created either.
    let s2 = scratch();
    let tar = T::new()
        .symlink("rootfs/link", s2.outside.to_str().unwrap())
        .dir("rootfs/link/sub/", 0o755)
        .bytes();
    unsafe_message(run(&s2, &tar).0);
    s2.assert_outside_untouched();
}

#[test]
fn entries_replace_symlinks_not_their_targets() {
    let s = scratch();
    let target = s.outside.join("passwd");
    let tar = T::new()
        .config("config.json", "{}")
        .symlink("rootfs/f", target.to_str().unwrap())
        .file("rootfs/f", 0o644, b"replaced")
        .symlink("rootfs/d", s.outside.to_str().unwrap())
        .dir("rootfs/d", 0o755)
        .file("rootfs/d/x", 0o644, b"x")
        .symlink("rootfs/p", s.outside.to_str().unwrap())
        .special(EntryType::Fifo, "rootfs/p")
        .bytes();
    run(&s, &tar).0.unwrap();
    let md = fs::symlink_metadata(s.root.join("f")).unwrap();
    assert!(md.is_file());
    assert_eq!(fs::read(s.root.join("f")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(s.root.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(s.root.join("d/x")).unwrap(), b"x");
    assert!(fs::symlink_metadata(s.root.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    s.assert_outside_untouched();
}

#[test]
fn directory_replaced_by_symlink_then_written_through_is_refused() {
    let s = scratch();
    let tar = T::new()
        .dir("rootfs/d/", 0o755)
        .dir("rootfs/d/sub/", 0o755)
        .symlink("rootfs/d", s.outside.to_str().unwrap())
        .file("rootfs/d/sub/x", 0o644, b"pwned")
        .bytes();
    unsafe_message(run(&s, &tar).0);
    s.assert_outside_untouched();
}

#[test]
fn directory_times_not_applied_through_replaced_paths() {
    // rootfs/d/sub's deferred mtime must not be applied via the symlink that replaced d.
    let s = scratch();
    fs::create_dir(s.outside.join("sub")).unwrap();
    let before = fs::metadata(s.outside.join("sub")).unwrap().mtime();
    let tar = T::new()
        .config("config.json", "{}")
        .dir("rootfs/d/", 0o755)
        .dir("rootfs/d/sub/", 0o755)
        .symlink("rootfs/d", s.outside.to_str().unwrap())
        .bytes();
    run(&s, &tar).0.unwrap();
    assert_eq!(fs::metadata(s.outside.join("sub")).unwrap().mtime(), before);
    assert_ne!(before as u64, MTIME);
}

#[test]
fn hardlink_outside_rootfs_is_refused() {
    expect_unsafe(
        T::new()
            .config("config.json", "{}")
            .hardlink("rootfs/h", "config.json")
            .bytes(),
        "outside rootfs/",
    );
    expect_unsafe(
        T::new()
            .dir("rootfs/", 0o755)
            .hardlink("rootfs/h", "rootfs/../../outside/passwd")
            .bytes(),
        "climbs above the root",
    );
    expect_unsafe(
        T::new()
            .dir("rootfs/", 0o755)
            .hardlink("rootfs/h", "../outside/passwd")
            .bytes(),
        "climbs above the root",
    );
}

#[test]
fn hardlink_to_etc_passwd_is_refused() {
    expect_unsafe(
        T::new()
            .dir("rootfs/", 0o755)
            .hardlink("rootfs/h", "/etc/passwd")
            .bytes(),
        "\"/etc/passwd\" is outside rootfs/",
    );
    // Even when spelled inside rootfs/, it was never extracted.
    expect_unsafe(
        T::new()
            .dir("rootfs/", 0o755)
            .hardlink("rootfs/h", "/rootfs/etc/passwd")
            .bytes(),
        "has not been extracted",
    );
}

#[test]
fn hardlink_to_not_yet_extracted_or_through_symlink_is_refused() {
    expect_unsafe(
        T::new()
            .hardlink("rootfs/h", "rootfs/later")
            .file("rootfs/later", 0o644, b"x")
            .bytes(),
        "has not been extracted",
    );
    let s = scratch();
    let tar = T::new()
        .symlink("rootfs/l", s.outside.to_str().unwrap())
        .hardlink("rootfs/h", "rootfs/l/passwd")
        .bytes();
    unsafe_message(run(&s, &tar).0);
    assert!(!s.root.join("h").exists());
    s.assert_outside_untouched();
    expect_unsafe(
        T::new()
            .dir("rootfs/d/", 0o755)
            .hardlink("rootfs/h", "rootfs/d")
            .bytes(),
        "is a directory",
    );
    expect_unsafe(
        T::new()
            .dir("rootfs/", 0o755)
            .hardlink("rootfs/h", "rootfs")
            .bytes(),
        "",
    );
}

#[test]
fn hardlink_to_symlink_links_the_symlink_itself() {
    let s = scratch();
    let tar = T::new()
        .config("config.json", "{}")
        .symlink("rootfs/l", s.outside.join("passwd").to_str().unwrap())
        .hardlink("rootfs/h", "rootfs/l")
        .bytes();
    run(&s, &tar).0.unwrap();
    assert!(fs::symlink_metadata(s.root.join("h"))
        .unwrap()
        .file_type()
        .is_symlink());
    s.assert_outside_untouched();
}

#[test]
fn device_nodes_are_skipped() {
    let s = scratch();
    let tar = T::new()
        .config("config.json", "{}")
        .dir("rootfs/dev/", 0o755)
        .special(EntryType::Char, "rootfs/dev/null")
        .special(EntryType::Block, "rootfs/dev/sda")
        .file("rootfs/dev/ok", 0o644, b"ok")
        .bytes();
    let (res, layer) = run(&s, &tar);
    res.unwrap();
    assert!(fs::symlink_metadata(s.root.join("dev/null")).is_err());
    assert!(fs::symlink_metadata(s.root.join("dev/sda")).is_err());
    assert_eq!(layer_names(&layer), ["dev/", "dev/ok"]);
    // A rootfs holding only a device still counts as a rootfs (dockerd counts every entry).
    let s = scratch();
    let tar = T::new()
        .config("config.json", "{}")
        .special(EntryType::Char, "rootfs/c")
        .bytes();
    run(&s, &tar).0.unwrap();
}

// ---- corrupt input ---------------------------------------------------------------------

#[test]
fn truncated_tar_is_a_read_error() {
    let big = vec![7u8; 10_000];
    let tar = T::new()
        .config("config.json", "{}")
        .file("rootfs/big", 0o644, &big)
        .file("rootfs/after", 0o644, b"x")
        .bytes();
    let eof = ExtractError::Read("unexpected EOF".into());
    // Cut inside the data of rootfs/big, inside the next header, and in a config.json body.
    for cut in [1024 + 512 + 4000, 1024 + 512 + 10_240 + 100, 512 + 1] {
        let s = scratch();
        assert_eq!(run(&s, &tar[..cut]).0.unwrap_err(), eof, "cut at {cut}");
    }
    let s = scratch();
    let gz = gzip(&tar);
    assert_eq!(run(&s, &gz[..gz.len() / 2]).0.unwrap_err(), eof);
    assert_eq!(eof.to_string(), "failed to read from tar: unexpected EOF");
}

#[test]
fn garbage_is_a_read_error() {
    let s = scratch();
    let junk = vec![b'x'; 2048];
    assert_eq!(
        run(&s, &junk).0.unwrap_err(),
        ExtractError::Read("archive/tar: invalid tar header".into())
    );
}

// ---- registry layers -------------------------------------------------------------------

#[test]
fn unpack_layer_applies_whiteouts_and_safety() {
    let s = scratch();
    let tar = T::new()
        .dir("./", 0o755)
        .file("a", 0o644, b"a")
        .file("b", 0o644, b"b")
        .file(".wh.a", 0o644, b"")
        .dir("d/", 0o755)
        .file("d/x", 0o644, b"x")
        .file("d/.wh..wh..opq", 0o644, b"")
        .bytes();
    unpack_layer(&tar[..], &s.root, UnpackLimit::default()).unwrap();
    assert!(!s.root.join("a").exists());
    assert_eq!(fs::read(s.root.join("b")).unwrap(), b"b");
    assert_eq!(fs::read(s.root.join("d/x")).unwrap(), b"x");
    assert!(!s.root.join(".wh.a").exists());

    for bad in [".wh.", "d/.wh..", "d/.wh..."] {
        let s = scratch();
        let tar = T::new().dir("d/", 0o755).file(bad, 0o644, b"").bytes();
        let msg = unsafe_message(unpack_layer(&tar[..], &s.root, UnpackLimit::default()));
        assert!(msg.contains("invalid whiteout name"), "{bad}: {msg}");
        assert!(s.root.join("d").is_dir());
    }

    let s = scratch();
    let tar = T::new()
        .symlink("l", s.outside.to_str().unwrap())
        .file("l/passwd", 0o644, b"p")
        .bytes();
    unsafe_message(unpack_layer(&tar[..], &s.root, UnpackLimit::default()));
    s.assert_outside_untouched();
    let tar = T::new().file("../x", 0o644, b"p").bytes();
    unsafe_message(unpack_layer(&tar[..], &s.root, UnpackLimit::default()));
}

#[test]
fn unpack_layer_into_non_empty_dir_checks_the_disk() {
    let s = scratch();
    std::os::unix::fs::symlink(&s.outside, s.root.join("pre")).unwrap();
    fs::write(s.root.join("old"), b"old").unwrap();
    let tar = T::new().file("pre/passwd", 0o644, b"pwned").bytes();
    unsafe_message(unpack_layer(&tar[..], &s.root, UnpackLimit::default()));
    s.assert_outside_untouched();
    // A pre-existing file cannot be hardlinked (it was not extracted by us) ...
    let tar = T::new().hardlink("h", "old").bytes();
    unsafe_message(unpack_layer(&tar[..], &s.root, UnpackLimit::default()));
    // ... but can be replaced, and replacing the pre-existing symlink leaves its target alone.
    let tar = T::new()
        .file("old", 0o644, b"new")
        .file("pre", 0o644, b"file")
        .bytes();
    unpack_layer(&tar[..], &s.root, UnpackLimit::default()).unwrap();
    assert_eq!(fs::read(s.root.join("old")).unwrap(), b"new");
    assert_eq!(fs::read(s.root.join("pre")).unwrap(), b"file");
    s.assert_outside_untouched();
}

#[test]
fn every_failure_answers_500_with_its_text() {
    for e in [
        ExtractError::NoRootfs,
        ExtractError::NoConfig,
        ExtractError::Unsafe("refusing unsafe tar entry \"x\": y".into()),
        ExtractError::Read("unexpected EOF".into()),
        ExtractError::Io("failed to write file data: disk full".into()),
    ] {
        let text = e.to_string();
        let daemon = Error::from(e);
        assert_eq!((daemon.status(), daemon.message()), (500, text.as_str()));
    }
}

/// Bytes that do not compress (xorshift).
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn an_archive_unpacking_beyond_the_limit_stops_there() {
    let floor = 1 << 20;
    let zeros = T::new()
        .config("config.json", "{}")
        .dir("rootfs/", 0o755)
        .file("rootfs/zeros", 0o644, &vec![0; 4 << 20])
        .bytes();
    let s = scratch();
    let mut layer = Vec::new();
    let res = unpack_create_context(
        &gzip(&zeros)[..],
        &s.root,
        &mut layer,
        UnpackLimit::new(floor),
    );
    let Err(ExtractError::TooLarge {
        allowed,
        compressed,
        floor: f,
    }) = res
    else {
        panic!("expected TooLarge, got {res:?}");
    };
    assert_eq!(
        (allowed, f),
        (floor, floor),
        "the floor decides for a small archive"
    );
    assert!(compressed < 64 << 10, "{compressed}");
    let written = fs::metadata(s.root.join("zeros"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written <= floor, "stopped at the limit: {written}");
    let e = Error::from(res.unwrap_err());
    assert_eq!(e.status(), 400);
    assert!(
        e.to_string()
            .starts_with("refusing an archive that unpacks to more than 1.049MB: the limit after "),
        "{e}"
    );
    s.assert_outside_untouched();

    // The same bound for a layer.
    let s = scratch();
    let layer_tar = T::new().file("zeros", 0o644, &vec![0; 4 << 20]).bytes();
    let res = unpack_layer(&gzip(&layer_tar)[..], &s.root, UnpackLimit::new(floor));
    assert!(matches!(res, Err(ExtractError::TooLarge { .. })), "{res:?}");
    // Without a limit it unpacks.
    let s = scratch();
    unpack_layer(&gzip(&layer_tar)[..], &s.root, UnpackLimit::unlimited()).unwrap();
    unpack_layer(&gzip(&layer_tar)[..], &scratch().root, UnpackLimit::new(0)).unwrap();
}

#[test]
fn the_limit_grows_with_what_was_read() {
    // 4 MiB that do not compress: ten times what was read is always ahead of the floor.
    let data = incompressible(4 << 20);
    let tar = T::new()
        .config("config.json", "{}")
        .dir("rootfs/", 0o755)
        .file("rootfs/data", 0o644, &data)
        .bytes();
    let s = scratch();
    let mut layer = Vec::new();
    unpack_create_context(
        &gzip(&tar)[..],
        &s.root,
        &mut layer,
        UnpackLimit::new(1 << 20),
    )
    .expect("within 10× its compressed size");
    assert_eq!(fs::read(s.root.join("data")).unwrap(), data);
    // A plain tar is never more than what was read.
    let s = scratch();
    let mut layer = Vec::new();
    unpack_create_context(&tar[..], &s.root, &mut layer, UnpackLimit::new(1)).unwrap();
}
