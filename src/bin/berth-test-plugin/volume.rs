//! The VolumeDriver mode of the test plugin: volumes are directories `<TEST_ROOT>/<name>`,
//! metadata in `<TEST_ROOT>/.berth-test-plugin/<name>.json`, mounts counted per caller ID.

use super::*;

impl Driver {
    /// `VolumeDriver.<method>`. A method answers `Err` early (a bad name, no such volume)
    /// with `?`.
    pub(super) fn volume_call(&self, method: &str, args: &Value) -> Reply {
        let answer = match method {
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

    fn mountpoint_reply(&self, name: &str) -> Reply {
        Reply::ok(json!({ "Mountpoint": self.volume_dir(name).display().to_string(), "Err": "" }))
    }

    fn create(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.name_of(args)?;
        let opts = field(args, "Opts").cloned().unwrap_or(Value::Null);
        if let Some(msg) = field(&opts, "error").and_then(Value::as_str) {
            return Ok(Reply::err(msg));
        }
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
            return Ok(Reply::err("no such volume"));
        }
        if self.mount_count(&name) > 0 {
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
        Ok(Reply::ok(json!({
            "Volume": {
                "Name": name,
                "Mountpoint": self.volume_dir(&name).display().to_string(),
                "CreatedAt": rfc3339(created),
                "Status": status,
            },
            "Err": "",
        })))
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
        Ok(self.mountpoint_reply(&name))
    }

    fn mount(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.existing(args)?;
        let id = str_field(args, "ID");
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .insert(id);
        Ok(self.mountpoint_reply(&name))
    }

    fn unmount(&self, args: &Value) -> Result<Reply, Reply> {
        let name = self.existing(args)?;
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
