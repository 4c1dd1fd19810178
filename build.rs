//! Records what `docker version` shows about the build: commit, compiler, time.
use std::process::Command;

fn output_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = output_of("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output_of(&rustc, &["--version"]).unwrap_or_default();
    let build_time =
        output_of("date", &["-u", "+%Y-%m-%dT%H:%M:%S.000000000+00:00"]).unwrap_or_default();
    println!("cargo:rustc-env=BERTH_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=BERTH_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=BERTH_BUILD_TIME={build_time}");
    // HEAD and the branch it names, where git keeps them: in a worktree `.git` is a file (a
    // path that does not exist makes cargo rebuild the crate every time), and its refs are
    // shared with every other worktree (watching them all rebuilds on others' commits).
    let branch = output_of("git", &["rev-parse", "--symbolic-full-name", "HEAD"])
        .filter(|name| name.starts_with("refs/"));
    for name in ["HEAD", branch.as_deref().unwrap_or("HEAD"), "packed-refs"] {
        if let Some(path) = output_of("git", &["rev-parse", "--git-path", name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
