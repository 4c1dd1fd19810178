//! The process the plugin becomes: hostname, working directory, the entrypoint looked up
//! (step 10) and the capability sets (step 11).

use std::io;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};

use super::{fail, SetupError, Step};
use crate::goerr::io_error_text;
use crate::runtime::spec::PluginSpec;
use crate::runtime::syscall::Syscall;

/// Step 10a: the spec's hostname, when it has one (only in a private UTS namespace).
pub(super) fn set_hostname(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    if spec.hostname.is_empty() {
        return Ok(());
    }
    if spec.namespaces.uts {
        sys.sethostname(&spec.hostname)
            .step(|| format!("setting hostname {}", spec.hostname))
    } else {
        sys.warn("hostname ignored: the plugin shares the host's UTS namespace");
        Ok(())
    }
}

/// Step 10b: into the working directory (created in step 5).
pub(super) fn enter_working_dir(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    sys.chdir(Path::new(&spec.cwd))
        .step(|| format!("chdir to working directory {}", spec.cwd))
}

/// Step 10c: Go's `exec.LookPath` as runc uses it: a name with a `/` is used as is, anything
/// else is searched on the spec's `PATH` (the last `PATH=` entry wins, as the environment
/// would).
pub(crate) fn find_executable(
    sys: &dyn Syscall,
    arg0: &str,
    env: &[String],
) -> Result<PathBuf, SetupError> {
    if arg0.contains('/') {
        let path = PathBuf::from(arg0);
        return match sys.check_executable(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fail(
                format!("exec: {arg0:?}"),
                format!("stat {arg0}: {}", io_error_text(&e)),
            ),
            Err(e) => Err(e).step(|| format!("exec: {arg0:?}")),
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if sys.check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    fail(
        format!("exec: {arg0:?}"),
        "executable file not found in $PATH",
    )
}

/// Step 11: the bounding set limited to the spec's capabilities, the ambient set cleared,
/// then the inheritable, effective and permitted sets.
pub(super) fn set_capabilities(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    apply_capabilities(sys, &spec.capabilities, &spec.inheritable_capabilities)
}

/// Bounding, effective and permitted sets exactly `capabilities`; inheritable exactly
/// `inheritable` (within them); nothing ambient.
pub(crate) fn apply_capabilities(
    sys: &dyn Syscall,
    capabilities: &[String],
    inheritable: &[String],
) -> Result<(), SetupError> {
    let (capabilities, inheritable) = capability_sets(sys, capabilities, inheritable);
    sys.limit_bounding_set(&capabilities)
        .step(|| "setting the capability bounding set".into())?;
    sys.clear_ambient_caps()
        .step(|| "clearing ambient capabilities".into())?;
    sys.set_caps(CapSet::Inheritable, &inheritable)
        .step(|| "setting inheritable capabilities".into())?;
    sys.set_caps(CapSet::Effective, &capabilities)
        .step(|| "setting effective capabilities".into())?;
    sys.set_caps(CapSet::Permitted, &capabilities)
        .step(|| "setting permitted capabilities".into())
}

fn capability_sets(
    sys: &dyn Syscall,
    capabilities: &[String],
    inheritable: &[String],
) -> (CapsHashSet, CapsHashSet) {
    let parse = |names: &[String]| -> CapsHashSet {
        let mut set = CapsHashSet::new();
        for name in names {
            match name.parse::<Capability>() {
                Ok(cap) => {
                    set.insert(cap);
                }
                Err(_) => sys.warn(&format!("unknown capability {name} ignored")),
            }
        }
        set
    };
    let capabilities = parse(capabilities);
    // inheritable ⊆ bounding, or capset refuses it
    let inheritable = parse(inheritable)
        .intersection(&capabilities)
        .copied()
        .collect();
    (capabilities, inheritable)
}
