//! `docker plugin set` rules (moby `v2/settable.go` + `Plugin.Set`).
//!
//! Confirmed against dockerd 20.10: the messages below are moby's (note the capital `P` in
//! `Plugin config has no mount source` / `Plugin config has no device path`), and every one is
//! an untyped error (HTTP 500). `cannot set on an active plugin, disable plugin before setting`
//! is the caller's check (this function does not know whether the plugin is enabled).

use super::config::{go_quote, PluginConfig, PluginDevice, PluginMount, PluginSettings};
use crate::error::Error;

/// Why a `set` argument was refused; moby's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("invalid format, must be <name>[.<field>][=<value>]")]
    InvalidFormat,
    #[error("multiple fields are settable, one must be specified")]
    MultipleFields,
    /// The name (with the field, when given or inferred) that may not be set.
    #[error("{} is not settable", go_quote(.0))]
    NotSettable(String),
    #[error("Plugin config has no mount source")]
    NoMountSource,
    #[error("Plugin config has no device path")]
    NoDevicePath,
    #[error("setting {} not found in the plugin configuration", go_quote(.0))]
    NotFound(String),
}

/// Untyped in moby: a 500.
impl From<SetError> for Error {
    fn from(e: SetError) -> Error {
        Error::System(e.to_string())
    }
}

const ALLOWED_ENV: &[&str] = &["value"];
const ALLOWED_ARGS: &[&str] = &["value"];
const ALLOWED_DEVICES: &[&str] = &["path"];
const ALLOWED_MOUNTS: &[&str] = &["source"];

/// One parsed argument: `<name>[.<field>][=<value>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settable {
    name: String,
    field: String,
    value: String,
}

impl Settable {
    /// moby `newSettable`: the first `=` separates the value (none: empty value; at position
    /// 0: invalid); the key splits at its last `.` when that is not its first character.
    fn parse(arg: &str) -> Result<Settable, SetError> {
        let (key, value) = match arg.find('=') {
            Some(0) => return Err(SetError::InvalidFormat),
            Some(i) => (&arg[..i], &arg[i + 1..]),
            None => (arg, ""),
        };
        let (name, field) = match key.rfind('.') {
            Some(i) if i > 0 => (&key[..i], &key[i + 1..]),
            _ => (key, ""),
        };
        Ok(Settable {
            name: name.to_string(),
            field: field.to_string(),
            value: value.to_string(),
        })
    }

    /// moby `isSettable`: infers the field from a single-entry `Settable` (keeping it for the
    /// error text), refuses to guess among several, then needs the field to be both allowed for
    /// the kind and listed.
    fn check(&mut self, allowed: &[&str], settable: Option<&Vec<String>>) -> Result<(), SetError> {
        let settable: &[String] = settable.map_or(&[], |s| s.as_slice());
        if self.field.is_empty() {
            match settable.len() {
                0 => {}
                1 => self.field = settable[0].clone(),
                _ => return Err(SetError::MultipleFields),
            }
        }
        if allowed.contains(&self.field.as_str()) && settable.contains(&self.field) {
            Ok(())
        } else {
            Err(SetError::NotSettable(self.pretty_name()))
        }
    }

    fn pretty_name(&self) -> String {
        if self.field.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.field)
        }
    }
}

/// Apply `set` arguments (`<name>[.<field>][=<value>]`) atomically: on any error neither
/// `config` nor `settings` is changed.
///
/// Each argument is resolved in order against `Config.Env`, `Config.Mounts`,
/// `Config.Linux.Devices`, then `Config.Args` (first name match wins). Env writes
/// `Settings.Env` (replace `NAME=…` in place or append); mounts and devices write the new
/// source/path to both `Config` and `Settings` (moby shares the pointer); args replace
/// `Settings.Args` with the value split on single spaces.
pub fn apply_set_args(
    config: &mut PluginConfig,
    settings: &mut PluginSettings,
    args: &[String],
) -> Result<(), SetError> {
    // All arguments are parsed before any is applied (moby `newSettables`).
    let sets = args
        .iter()
        .map(|a| Settable::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut new_config = config.clone();
    let mut new_settings = settings.clone();
    for set in sets {
        apply_one(&mut new_config, &mut new_settings, set)?;
    }
    *config = new_config;
    *settings = new_settings;
    Ok(())
}

fn apply_one(
    config: &mut PluginConfig,
    settings: &mut PluginSettings,
    mut set: Settable,
) -> Result<(), SetError> {
    if let Some(env) = config.env.iter().flatten().find(|e| e.name == set.name) {
        set.check(ALLOWED_ENV, env.settable.as_ref())?;
        let entry = format!("{}={}", set.name, set.value);
        match settings
            .env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(set.name.as_str()))
        {
            Some(e) => *e = entry,
            None => settings.env.push(entry),
        }
        return Ok(());
    }

    if let Some(done) = set_shared(&mut set, config.mounts.as_mut(), &mut settings.mounts) {
        return done;
    }
    if let Some(done) = set_shared(
        &mut set,
        config.linux.devices.as_mut(),
        &mut settings.devices,
    ) {
        return done;
    }

    if config.args.name == set.name {
        set.check(ALLOWED_ARGS, config.args.settable.as_ref())?;
        settings.args = set.value.split(' ').map(str::to_string).collect();
        return Ok(());
    }

    Err(SetError::NotFound(set.name))
}

/// A config entry whose one settable field (a mount's source, a device's path) is shared with
/// its copy in Settings: moby shares the pointer.
trait SharedField {
    const ALLOWED: &'static [&'static str];
    /// When the config entry has no value to set (`null`).
    const MISSING: SetError;
    fn name(&self) -> &str;
    fn settable(&self) -> Option<&Vec<String>>;
    fn field(&mut self) -> &mut Option<String>;
}

impl SharedField for PluginMount {
    const ALLOWED: &'static [&'static str] = ALLOWED_MOUNTS;
    const MISSING: SetError = SetError::NoMountSource;
    fn name(&self) -> &str {
        &self.name
    }
    fn settable(&self) -> Option<&Vec<String>> {
        self.settable.as_ref()
    }
    fn field(&mut self) -> &mut Option<String> {
        &mut self.source
    }
}

impl SharedField for PluginDevice {
    const ALLOWED: &'static [&'static str] = ALLOWED_DEVICES;
    const MISSING: SetError = SetError::NoDevicePath;
    fn name(&self) -> &str {
        &self.name
    }
    fn settable(&self) -> Option<&Vec<String>> {
        self.settable.as_ref()
    }
    fn field(&mut self) -> &mut Option<String> {
        &mut self.path
    }
}

/// Sets the shared field of the config entry named `set.name`, in the config and in Settings;
/// `None` when `config_list` has no such entry.
fn set_shared<T: SharedField>(
    set: &mut Settable,
    config_list: Option<&mut Vec<T>>,
    settings_list: &mut [T],
) -> Option<Result<(), SetError>> {
    let (i, entry) = config_list?
        .iter_mut()
        .enumerate()
        .find(|(_, e)| e.name() == set.name)?;
    if let Err(e) = set.check(T::ALLOWED, entry.settable()) {
        return Some(Err(e));
    }
    let Some(value) = entry.field().as_mut() else {
        return Some(Err(T::MISSING));
    };
    *value = set.value.clone();
    if let Some(copy) = paired(settings_list, i, |e| e.name() == set.name) {
        *copy.field() = Some(set.value.clone());
    }
    Some(Ok(()))
}

/// The Settings entry that shares the config entry's source/path in moby: Settings were
/// copied from the config, so normally the same index; otherwise (a config replaced by
/// upgrade) the first entry with the same name.
fn paired<T>(list: &mut [T], index: usize, same: impl Fn(&T) -> bool) -> Option<&mut T> {
    if list.get(index).is_some_and(&same) {
        return list.get_mut(index);
    }
    list.iter_mut().find(|t| same(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::config::decode_config;

    /// The config of the `setprobe` plugin created on dockerd 20.10 to confirm the rules.
    const SETPROBE: &str = r#"{"Description":"set probe","Entrypoint":["/x"],"Interface":{"Types":["docker.volumedriver/1.0"],"Socket":"s.sock"},
 "Env":[{"Name":"DEBUG","Settable":["value"],"Value":"0"},{"Name":"LOCKED","Settable":null,"Value":"1"},
        {"Name":"MULTI","Settable":["value","path"],"Value":"m"},{"Name":"PATHONLY","Settable":["path"],"Value":"p"},
        {"Name":"NOVAL","Settable":["value"],"Value":null},{"Name":"a.b","Settable":["value"],"Value":"ab"},
        {"Name":"dup","Settable":["value"],"Value":"d1"},{"Name":"state","Settable":["value"],"Value":"envstate"}],
 "Mounts":[{"Name":"state","Settable":["source"],"Source":"/var/lib/x","Destination":"/mnt/state","Type":"bind","Options":["rbind"]},
           {"Name":"nosrc","Settable":["source"],"Source":null,"Destination":"/mnt/n","Type":"bind"},
           {"Name":"fixed","Settable":null,"Source":"/f","Destination":"/mnt/f","Type":"bind"},
           {"Name":"fuse","Settable":["source"],"Source":"/m","Destination":"/mnt/m","Type":"bind"}],
 "Linux":{"Devices":[{"Name":"fuse","Settable":["path"],"Path":"/dev/fuse"},{"Name":"nopath","Settable":["path"],"Path":null},
        {"Name":"dev2","Settable":["path"],"Path":"/dev/null"}]},
 "Args":{"Name":"args","Settable":["value"],"Value":["--a"]}}"#;

    fn probe() -> (PluginConfig, PluginSettings) {
        let c = decode_config(SETPROBE.as_bytes()).unwrap();
        let s = PluginSettings::init_from(&c);
        (c, s)
    }

    fn set(c: &mut PluginConfig, s: &mut PluginSettings, args: &[&str]) -> Result<(), String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        apply_set_args(c, s, &args).map_err(|e| e.to_string())
    }

    /// Set on a fresh probe; on error also check that nothing changed.
    fn try_set(args: &[&str]) -> Result<(PluginConfig, PluginSettings), String> {
        let (mut c, mut s) = probe();
        match set(&mut c, &mut s, args) {
            Ok(()) => Ok((c, s)),
            Err(e) => {
                assert_eq!((c, s), probe(), "{args:?} failed but changed state");
                Err(e)
            }
        }
    }

    fn set_err(args: &[&str]) -> String {
        try_set(args).expect_err("should fail")
    }

    #[test]
    fn parse_grammar() {
        let p = |a: &str| Settable::parse(a).map(|s| (s.name, s.field, s.value));
        let t = |n: &str, f: &str, v: &str| Ok((n.to_string(), f.to_string(), v.to_string()));
        assert_eq!(p("DEBUG=1"), t("DEBUG", "", "1"));
        assert_eq!(p("DEBUG"), t("DEBUG", "", ""));
        assert_eq!(p("DEBUG="), t("DEBUG", "", ""));
        assert_eq!(p("a=b=c"), t("a", "", "b=c"));
        assert_eq!(p("a.b.c=x"), t("a.b", "c", "x"));
        assert_eq!(p("a.b=x.y"), t("a", "b", "x.y"));
        assert_eq!(p("a.b=X=Y"), t("a", "b", "X=Y"));
        assert_eq!(p("m.source=/a.b"), t("m", "source", "/a.b"));
        assert_eq!(p("DEBUG.=1"), t("DEBUG", "", "1"));
        // a leading `.` does not split
        assert_eq!(p(".x=1"), t(".x", "", "1"));
        assert_eq!(p("."), t(".", "", ""));
        assert_eq!(p(""), t("", "", ""));
        assert_eq!(p("=1"), Err(SetError::InvalidFormat));
        assert_eq!(p("="), Err(SetError::InvalidFormat));
    }

    /// Every message confirmed on dockerd 20.10 with the SETPROBE plugin.
    #[test]
    fn error_messages() {
        let fmt = "invalid format, must be <name>[.<field>][=<value>]";
        let not_settable = |n: &str| format!("{n:?} is not settable");
        let not_found = |n: &str| format!("setting {n} not found in the plugin configuration");
        let cases: &[(&[&str], String)] = &[
            (&["=1"], fmt.into()),
            (&["="], fmt.into()),
            // the format of every argument is checked before any is applied
            (&["DEBUG=1", "=x"], fmt.into()),
            (&["LOCKED=2"], not_settable("LOCKED")),
            (&["LOCKED.value=1"], not_settable("LOCKED.value")),
            (&["DEBUG.path=3"], not_settable("DEBUG.path")),
            (&["fixed.source=/x"], not_settable("fixed.source")),
            (&["dev2.source=/x"], not_settable("dev2.source")),
            (&["args.foo=1"], not_settable("args.foo")),
            // an inferred field shows in the message
            (&["PATHONLY=1"], not_settable("PATHONLY.path")),
            (
                &["MULTI=1"],
                "multiple fields are settable, one must be specified".into(),
            ),
            (&["nosrc=/x"], "Plugin config has no mount source".into()),
            (
                &["nosrc.source=/x"],
                "Plugin config has no mount source".into(),
            ),
            (&["nopath=/x"], "Plugin config has no device path".into()),
            (
                &["nopath.path=/x"],
                "Plugin config has no device path".into(),
            ),
            (&["nosuch=1"], not_found("\"nosuch\"")),
            (&["no\"such=1"], not_found(r#""no\"such""#)),
            (&["x.y.z=1"], not_found("\"x.y\"")),
            (&["args.value.x=1"], not_found("\"args.value\"")),
            (&["a.b=X=Y"], not_found("\"a\"")),
            (&[""], not_found("\"\"")),
            (&["."], not_found("\".\"")),
            (&[".x=1"], not_found("\".x\"")),
            // env is looked up before mounts: `state` is both
            (&["state.source=/new"], not_settable("state.source")),
        ];
        for (args, want) in cases {
            assert_eq!(&set_err(args), want, "{args:?}");
        }
    }

    #[test]
    fn settable_field_rules() {
        // no field + exactly one Settable entry: that entry
        assert!(try_set(&["DEBUG=1"]).is_ok());
        // an empty field after the last `.` counts as no field
        assert!(try_set(&["DEBUG.=1"]).is_ok());
        assert!(try_set(&["DEBUG.value=1"]).is_ok());
        // field listed in Settable but not allowed for the kind
        let mut c = decode_config(
            br#"{"Env":[{"Name":"E","Settable":["source","value"]}],
            "Mounts":[{"Name":"M","Source":"/s","Settable":["value","source"]}],
            "Linux":{"Devices":[{"Name":"D","Path":"/d","Settable":["source","path"]}]},
            "Args":{"Name":"A","Settable":["path","value"]}}"#,
        )
        .unwrap();
        let mut s = PluginSettings::init_from(&c);
        for (arg, msg) in [
            ("E.source=1", "\"E.source\" is not settable"),
            ("M.value=1", "\"M.value\" is not settable"),
            ("D.source=1", "\"D.source\" is not settable"),
            ("A.path=1", "\"A.path\" is not settable"),
            ("E=1", "multiple fields are settable, one must be specified"),
            ("M=1", "multiple fields are settable, one must be specified"),
            ("D=1", "multiple fields are settable, one must be specified"),
            ("A=1", "multiple fields are settable, one must be specified"),
        ] {
            assert_eq!(set(&mut c, &mut s, &[arg]).unwrap_err(), msg, "{arg}");
        }
        set(
            &mut c,
            &mut s,
            &["E.value=1", "M.source=/n", "D.path=/e", "A.value=x y"],
        )
        .unwrap();
        assert_eq!(s.env, vec!["E=1".to_string()]);
        assert_eq!(s.args, vec!["x".to_string(), "y".to_string()]);
        // an empty Settable list is as good as none
        let mut c = decode_config(br#"{"Env":[{"Name":"E","Settable":[]}]}"#).unwrap();
        let mut s = PluginSettings::init_from(&c);
        assert_eq!(
            set(&mut c, &mut s, &["E=1"]).unwrap_err(),
            "\"E\" is not settable"
        );
    }

    #[test]
    fn env_effects() {
        let (_, s) = try_set(&["DEBUG"]).unwrap();
        assert_eq!(s.env[0], "DEBUG=");
        let (c, s) = try_set(&["DEBUG=x=y"]).unwrap();
        assert_eq!(s.env[0], "DEBUG=x=y");
        // the config's default is untouched
        assert_eq!(c.env.unwrap()[0].value.as_deref(), Some("0"));
        // a null-valued env is appended at the end
        let (_, s) = try_set(&["NOVAL=5"]).unwrap();
        assert_eq!(s.env.last().unwrap(), "NOVAL=5");
        assert_eq!(s.env.len(), 8);
        // dotted names need their field spelled out
        let (_, s) = try_set(&["a.b.value=Z"]).unwrap();
        assert!(s.env.contains(&"a.b=Z".to_string()));
    }

    #[test]
    fn mount_and_device_writes_go_to_config_and_settings() {
        let (c, s) = try_set(&["fuse=/mnt/new", "dev2=/dev/zero"]).unwrap();
        // `fuse` is a mount (mounts before devices), `dev2` a device
        assert_eq!(
            c.mounts.as_ref().unwrap()[3].source.as_deref(),
            Some("/mnt/new")
        );
        assert_eq!(s.mounts[3].source.as_deref(), Some("/mnt/new"));
        let devices = c.linux.devices.as_ref().unwrap();
        assert_eq!(devices[0].path.as_deref(), Some("/dev/fuse"));
        assert_eq!(devices[2].path.as_deref(), Some("/dev/zero"));
        assert_eq!(s.devices[2].path.as_deref(), Some("/dev/zero"));
        // a Settings list that no longer lines up (config replaced by upgrade): match by name
        let (mut c, mut s) = probe();
        s.mounts.reverse();
        set(&mut c, &mut s, &["fuse.source=/z"]).unwrap();
        assert_eq!(s.mounts[0].source.as_deref(), Some("/z"));
        assert_eq!(c.mounts.as_ref().unwrap()[3].source.as_deref(), Some("/z"));
    }

    #[test]
    fn args_split_on_single_spaces() {
        let args = |v: &str| try_set(&[v]).unwrap().1.args;
        assert_eq!(args("args=--x --y"), vec!["--x", "--y"]);
        assert_eq!(args("args=--x  --y"), vec!["--x", "", "--y"]);
        assert_eq!(args("args="), vec![""]);
        assert_eq!(args("args"), vec![""]);
        assert_eq!(args("args.value= a"), vec!["", "a"]);
        // the config's default is untouched
        assert_eq!(
            try_set(&["args=1"]).unwrap().0.args.value,
            Some(vec!["--a".to_string()])
        );
    }

    #[test]
    fn atomic_on_failure() {
        // dockerd keeps `DEBUG=partial` in memory here; berth changes nothing
        let (mut c, mut s) = probe();
        let err = set(&mut c, &mut s, &["DEBUG=partial", "fuse=/x", "nosuch=1"]).unwrap_err();
        assert_eq!(
            err,
            "setting \"nosuch\" not found in the plugin configuration"
        );
        assert_eq!((c, s), probe());
    }

    #[test]
    fn empty_argument_list_is_a_no_op() {
        assert_eq!(try_set(&[]).unwrap(), probe());
    }

    /// The sequence of successful sets run against dockerd 20.10, then its `Settings`
    /// (dockerd's DEBUG is `partial` from the failed, partly applied set).
    #[test]
    fn matches_dockerd_sequence() {
        let (mut c, mut s) = probe();
        for args in [
            &["fuse.source=/dev/null"][..],
            &["DEBUG.=1"],
            &["dev2=/dev/zero"],
            &["DEBUG"],
            &["NOVAL=5"],
            &["a.b.value=Z"],
            &["args=--x  --y"],
            &["state=/new/src"],
            &["fuse=/mnt/new"],
            &["DEBUG=partial", "nosuch=1"],
            &["args="],
            &["args"],
        ] {
            let _ = set(&mut c, &mut s, args);
        }
        let dockerd = r#"{"Args":[""],"Devices":[{"Description":"","Name":"fuse","Path":"/dev/fuse","Settable":["path"]},{"Description":"","Name":"nopath","Path":null,"Settable":["path"]},{"Description":"","Name":"dev2","Path":"/dev/zero","Settable":["path"]}],"Env":["DEBUG=partial","LOCKED=1","MULTI=m","PATHONLY=p","a.b=Z","dup=d1","state=/new/src","NOVAL=5"],"Mounts":[{"Description":"","Destination":"/mnt/state","Name":"state","Options":["rbind"],"Settable":["source"],"Source":"/var/lib/x","Type":"bind"},{"Description":"","Destination":"/mnt/n","Name":"nosrc","Options":null,"Settable":["source"],"Source":null,"Type":"bind"},{"Description":"","Destination":"/mnt/f","Name":"fixed","Options":null,"Settable":null,"Source":"/f","Type":"bind"},{"Description":"","Destination":"/mnt/m","Name":"fuse","Options":null,"Settable":["source"],"Source":"/mnt/new","Type":"bind"}]}"#.replace("DEBUG=partial", "DEBUG=");
        assert_eq!(serde_json::to_string(&s).unwrap(), dockerd);
        assert_eq!(
            serde_json::to_string(&c.mounts).unwrap(),
            serde_json::to_string(&s.mounts).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&c.linux.devices.unwrap()).unwrap(),
            serde_json::to_string(&s.devices).unwrap()
        );
    }
}
