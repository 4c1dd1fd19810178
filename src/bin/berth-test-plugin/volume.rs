//! The VolumeDriver mode of the test plugin: volumes are directories `<TEST_ROOT>/<name>`,
//! metadata in `<TEST_ROOT>/.berth-test-plugin/<name>.json`, mounts counted per caller ID.

use super::*;

impl Driver {
    /// `VolumeDriver.<method>`. A method answers `Err` early (a bad name, no such volume)
    /// with `?`.
    pub(super) fn volume_call(&self, method: &str, args: &Value) -> Reply {
        let answer = match method {
            "VolumeDriver.Capabilities" if self.broken("caps-404") => Ok(Reply::not_found()),
            "VolumeDriver.Capabilities" if self.broken("scope-bogus") => {
                Ok(Reply::ok(json!({ "Capabilities": { "Scope": "cluster" } })))
            }
            "VolumeDriver.Capabilities" => Ok(Reply::ok(
                json!({ "Capabilities": { "Scope": self.cfg.scope } }),
            )),
            "VolumeDriver.Create" => self.create(args),
            "VolumeDriver.Remove" => self.remove(args),
            "VolumeDriver.Get" => self.get(args),
            "VolumeDriver.List" => Ok(self.list()),
            "VolumeDriver.Path" => self.path(args),
            "VolumeDriver.Mount" => self.mount(args),
            "VolumeDriver.Unmount" => self.unmount(args),
            _ => Ok(Reply::not_found()),
        };
        answer.unwrap_or_else(|early| early)
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.cfg.root.join(name)
    }

    /// The key of the mountpoint field (`mountpoint-case`: as dockerd reads it, not writes it).
    fn mountpoint_key(&self) -> &'static str {
        if self.broken("mountpoint-case") {
            "MountPoint"
        } else {
            "Mountpoint"
        }
    }

    /// The Mountpoint a Mount (or Path) answers for volume `name`.
    fn mountpoint(&self, name: &str, fresh: bool) -> String {
        if self.broken("mount-relative") {
            return format!("volumes/{name}");
        }
        if self.broken("mount-unwritable") {
            return "/proc/sys/kernel".into();
        }
        if self.broken("mount-nowhere") {
            return format!("/nonexistent/berth-test-plugin/{name}");
        }
        if fresh && self.broken("mount-new-dir") {
            let dir = self.cfg.root.join(format!(".mount-{name}-{}", now_nanos()));
            let _ = fs::create_dir_all(&dir);
            return dir.display().to_string();
        }
        self.volume_dir(name).display().to_string()
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.cfg.root.join(META_DIR).join(format!("{name}.json"))
    }

    /// The validated volume name of a request, or the error reply.
    fn name_of(&self, args: &Value) -> Result<String, Reply> {
        let name = str_field(args, "Name");
        if name.is_empty() {
            return Err(Reply::err("volume name is required"));
        }
        if name.starts_with('.') || name.contains('/') || name.contains('\0') {
            return Err(Reply::err(format!("invalid volume name {name:?}")));
        }
        Ok(name)
    }

    fn exists(&self, name: &str) -> bool {
        self.volume_dir(name).is_dir()
    }

    /// The name of an existing volume a request names, or the error reply.
    fn existing(&self, args: &Value) -> Result<String, Reply> {
        let name = self.name_of(args)?;
        match self.exists(&name) {
            true => Ok(name),
            false => Err(Reply::err("no such volume")),
        }
    }

    fn create(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.name_of(args)?;
        if self.broken("create-fails") {
            return Ok(Reply::err("create refused (TEST_BROKEN=create-fails)"));
        }
        let opts = field(args, "Opts").cloned().unwrap_or(Value::Null);
        if let Some(msg) = field(&opts, "error").and_then(Value::as_str) {
            return Ok(Reply::err(msg));
        }
        let unknown = opts
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "error").cloned());
        if let Some(key) = unknown {
            if self.broken("strict-opts-silent") {
                return Ok(Reply::err(""));
            }
            if self.broken("strict-opts") {
                return Ok(Reply::err(format!("unknown option {key:?}")));
            }
        }
        let _serial = if self.broken("create-serial") {
            match self.create_gate.try_lock() {
                Ok(g) => {
                    thread::sleep(Duration::from_millis(20));
                    Some(g)
                }
                Err(_) => return Ok(Reply::err("another create is running")),
            }
        } else {
            None
        };
        let _guard = self.fs_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.exists(&name) {
            // Idempotent, as the local driver is.
            return Ok(Reply::ok(json!({ "Err": "" })));
        }
        if let Err(e) = fs::create_dir_all(self.volume_dir(&name)) {
            return Ok(Reply::err(format!("create {name}: {e}")));
        }
        let meta = json!({ "CreatedAt": now_secs(), "Opts": opts });
        let _ = fs::create_dir_all(self.cfg.root.join(META_DIR));
        let _ = fs::write(self.meta_path(&name), meta.to_string());
        Ok(Reply::ok(json!({ "Err": "" })))
    }

    fn remove(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.name_of(args)?;
        let _guard = self.fs_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.exists(&name) {
            if self.broken("remove-unknown-ok") {
                return Ok(Reply::ok(json!({ "Err": "" })));
            }
            return Ok(Reply::err("no such volume"));
        }
        if self.broken("remove-fails") {
            return Ok(Reply::err("remove refused (TEST_BROKEN=remove-fails)"));
        }
        if self.broken("remove-keeps") {
            return Ok(Reply::ok(json!({ "Err": "" })));
        }
        if self.mount_count(&name) > 0 && !self.broken("remove-mounted-ok") {
            return Ok(Reply::err(format!("volume {name} is in use")));
        }
        if let Err(e) = fs::remove_dir_all(self.volume_dir(&name)) {
            return Ok(Reply::err(format!("remove {name}: {e}")));
        }
        let _ = fs::remove_file(self.meta_path(&name));
        Ok(Reply::ok(json!({ "Err": "" })))
    }

    fn get(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.name_of(args)?;
        if !self.exists(&name) && self.broken("get-ghosts") {
            return Ok(Reply::ok(
                json!({"Volume": {"Name": name, "Mountpoint": "/ghost"}, "Err": ""}),
            ));
        }
        if !self.exists(&name) {
            if self.cfg.get_null {
                return Ok(Reply::ok(json!({ "Volume": null, "Err": "" })));
            }
            return Ok(Reply::err("no such volume"));
        }
        let meta: Value = fs::read(self.meta_path(&name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let created = field(&meta, "CreatedAt")
            .and_then(Value::as_u64)
            .or_else(|| {
                fs::metadata(self.volume_dir(&name))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
            })
            .unwrap_or(0);
        let mut status = Map::new();
        status.insert("Mounts".into(), json!(self.mount_count(&name)));
        if let Some(opts) = field(&meta, "Opts").filter(|o| o.is_object()) {
            status.insert("Opts".into(), opts.clone());
        }
        let mut volume = Map::new();
        let shown_name = if self.broken("get-misnamed") {
            format!("{name}-other")
        } else {
            name.clone()
        };
        volume.insert("Name".into(), shown_name.into());
        volume.insert(
            self.mountpoint_key().into(),
            self.volume_dir(&name).display().to_string().into(),
        );
        let created_at = if self.broken("bad-created-at") {
            "yesterday".to_string()
        } else {
            rfc3339(created)
        };
        volume.insert("CreatedAt".into(), created_at.into());
        let status = if self.broken("status-list") {
            json!(["mounted", status.len()])
        } else {
            Value::Object(status)
        };
        volume.insert("Status".into(), status);
        Ok(Reply::ok(json!({ "Volume": volume, "Err": "" })))
    }

    fn list(&self) -> Reply {
        let mut names = Vec::new();
        match fs::read_dir(&self.cfg.root) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // The entry's type from readdir: no stat per volume.
                    if !name.starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()) {
                        names.push(name);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Reply::err(format!("list: {e}")),
        }
        names.sort();
        if self.broken("list-missing") {
            names.clear();
        }
        if self.broken("list-bad") {
            return Reply::ok(json!({"Volumes": {"count": names.len()}, "Err": ""}));
        }
        if self.broken("mountpoint-case") {
            let volumes: Vec<Value> = names
                .iter()
                .map(|n| json!({"Name": n, "MountPoint": self.volume_dir(n)}))
                .collect();
            return Reply::ok(json!({"Volumes": volumes, "Err": ""}));
        }
        // Serialised from plain structs: a `json!` tree per volume made this plugin slower
        // than the daemons that call it.
        // Keys in the order the former `json!` trees had (sorted), so answers stay the same.
        #[derive(serde::Serialize)]
        struct Listed<'a> {
            #[serde(rename = "Mountpoint")]
            mountpoint: PathBuf,
            #[serde(rename = "Name")]
            name: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Answer<'a> {
            #[serde(rename = "Err")]
            err: &'a str,
            #[serde(rename = "Volumes")]
            volumes: Vec<Listed<'a>>,
        }
        let volumes = names
            .iter()
            .map(|n| Listed {
                name: n,
                mountpoint: self.volume_dir(n),
            })
            .collect();
        Reply::json(200, Answer { volumes, err: "" })
    }

    fn path(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.existing(args)?;
        if self.broken("path-error") {
            return Ok(Reply::err("path refused (TEST_BROKEN=path-error)"));
        }
        let path = if self.broken("path-empty") {
            String::new()
        } else {
            self.mountpoint(&name, false)
        };
        Ok(Reply::ok(json!({ self.mountpoint_key(): path, "Err": "" })))
    }

    fn mount(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.name_of(args)?;
        if !self.exists(&name) {
            if !self.broken("mount-unknown-ok") {
                return Ok(Reply::err("no such volume"));
            }
            let _ = fs::create_dir_all(self.volume_dir(&name));
        }
        if self.broken("mount-fails") {
            return Ok(Reply::err("mount refused (TEST_BROKEN=mount-fails)"));
        }
        let id = str_field(args, "ID");
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .insert(id);
        Ok(Reply::ok(
            json!({ self.mountpoint_key(): self.mountpoint(&name, true), "Err": "" }),
        ))
    }

    fn unmount(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.existing(args)?;
        if self.broken("unmount-fails") {
            return Ok(Reply::err("unmount refused (TEST_BROKEN=unmount-fails)"));
        }
        if self.broken("unmount-wipes") {
            // Ignores the count: the data goes with the first unmount.
            if let Ok(entries) = fs::read_dir(self.volume_dir(&name)) {
                for e in entries.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let id = str_field(args, "ID");
        let mut mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = mounts.get_mut(&name) {
            ids.remove(&id);
            if ids.is_empty() {
                mounts.remove(&name);
            }
        }
        Ok(Reply::ok(json!({ "Err": "" })))
    }

    fn mount_count(&self, name: &str) -> usize {
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, HashSet::len)
    }
}
