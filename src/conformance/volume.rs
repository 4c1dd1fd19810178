//! VolumeDriver: the calls dockerd makes for `volume create/ls/inspect/rm` and for containers
//! mounting volumes, and what it needs back (plus what Cloud Foundry's volume driver
//! certification checks: data written through a mount reads back, mounts are counted by ID).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::prelude::*;
use crate::drivers::volume::VolumeDriverClient;
use crate::rpc::client::Retry;

/// Docker's spelling of VolumeDriver answer fields.
const FIELDS: &str = "Volume Volumes Name Mountpoint CreatedAt Status Err Capabilities Scope";

/// How many volumes `volume.create.parallel` creates at once.
const PARALLEL_VOLUMES: usize = 4;

fn mount_id() -> String {
    crate::fsutil::random_hex(32)
}

pub async fn run(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    capabilities(ctx, rec).await;
    let name = ctx.unique("vol");
    if !create(ctx, rec, &name).await {
        return;
    }
    get(ctx, rec, &name).await;
    list(ctx, rec, &name).await;
    mounts(ctx, rec, &name).await;
    remove(ctx, rec, &name).await;
    unknown(ctx, rec).await;
    parallel(ctx, rec).await;
}

fn adapter(ctx: &Context<'_>) -> VolumeDriverClient {
    VolumeDriverClient::with_retry(
        ctx.plugin.name.clone(),
        ctx.probe.client(),
        ctx.plugin.paths.clone(),
        Retry::Never,
    )
}

async fn capabilities(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    match ctx.call("VolumeDriver.Capabilities", json!({})).await {
        Ok(r) if r.succeeded() => {
            rec.pass("volume.capabilities.answers", r.summary());
            let scope = r
                .field("Capabilities")
                .and_then(|c| field(c, "Scope"))
                .cloned()
                .unwrap_or(Value::Null);
            match scope.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("local" | "global") => rec.pass("volume.capabilities.scope", r.summary()),
                None | Some("") if scope.is_null() || scope == "" => rec.record(
                    "volume.capabilities.scope",
                    Outcome::Warn,
                    "Scope \"local\" or \"global\"",
                    format!("no Scope (dockerd assumes local): {}", r.summary()),
                ),
                _ => {
                    rec.check(
                        "volume.capabilities.scope",
                        false,
                        "Scope \"local\" or \"global\"",
                        r.summary(),
                    );
                }
            }
        }
        Ok(r) => {
            rec.expect(
                "volume.capabilities.answers",
                false,
                Outcome::Warn,
                "200 with a JSON object",
                r.summary(),
            );
            rec.skip("volume.capabilities.scope", "Capabilities failed");
        }
        Err(e) => {
            rec.check("volume.capabilities.answers", false, "an answer", e);
            rec.skip("volume.capabilities.scope", "Capabilities failed");
        }
    }
}

fn opts_value(opts: &BTreeMap<String, String>) -> Value {
    if opts.is_empty() {
        Value::Null
    } else {
        json!(opts)
    }
}

/// Create (and the bad-options case); false when the scenario cannot go on.
async fn create(ctx: &Context<'_>, rec: &mut Recorder<'_>, name: &str) -> bool {
    let opts = &ctx.options.volume_opts;
    let body = json!({"Name": name, "Opts": opts_value(opts)});
    match ctx.call("VolumeDriver.Create", body).await {
        Ok(r) if r.succeeded() => rec.pass("volume.create.basic", r.summary()),
        Ok(r) => {
            rec.check(
                "volume.create.basic",
                false,
                "success",
                format!(
                    "{} (plugins that need options: --volume-opt k=v)",
                    r.summary()
                ),
            );
            rec.block(format!("Create failed: {}", r.summary()));
            return false;
        }
        Err(e) => {
            rec.check("volume.create.basic", false, "success", &e);
            rec.block(e);
            return false;
        }
    }

    let bad = ctx.unique("badopt");
    let mut bad_opts = opts.clone();
    bad_opts.insert(
        "berth-conformance-no-such-option".into(),
        "surely-not".into(),
    );
    match ctx
        .call(
            "VolumeDriver.Create",
            json!({"Name": bad, "Opts": bad_opts}),
        )
        .await
    {
        Ok(r) if r.is_error() => {
            rec.check(
                "volume.create.bad-opts",
                r.message().is_some(),
                "an error with a message",
                r.summary(),
            );
        }
        Ok(r) => {
            rec.record(
                "volume.create.bad-opts",
                Outcome::Warn,
                "an error naming the unknown option",
                format!("accepted: {}", r.summary()),
            );
            let _ = ctx.call("VolumeDriver.Remove", json!({"Name": bad})).await;
        }
        Err(e) => {
            rec.check("volume.create.bad-opts", false, "an answer", e);
        }
    }
    true
}

async fn get(ctx: &Context<'_>, rec: &mut Recorder<'_>, name: &str) {
    let r = match ctx.call("VolumeDriver.Get", json!({"Name": name})).await {
        Ok(r) => r,
        Err(e) => {
            rec.check("volume.get.created", false, "an answer", e);
            return;
        }
    };
    let volume = r.field("Volume").filter(|v| v.is_object());
    let ok = r.succeeded() && volume.is_some_and(|v| str_field(v, "Name") == name);
    rec.check(
        "volume.get.created",
        ok,
        format!("Volume {{Name: {name:?}, …}}"),
        r.summary(),
    );
    if let Some(v) = volume {
        match field(v, "CreatedAt") {
            None | Some(Value::Null) => rec.pass("volume.get.created-at", "not given"),
            Some(Value::String(s)) if s.is_empty() => {
                rec.pass("volume.get.created-at", "empty (not shown)")
            }
            Some(Value::String(s)) => {
                rec.check(
                    "volume.get.created-at",
                    chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                    "RFC 3339 (2006-01-02T15:04:05Z)",
                    format!("CreatedAt {s:?}"),
                );
            }
            Some(other) => {
                rec.check(
                    "volume.get.created-at",
                    false,
                    "an RFC 3339 string",
                    format!("CreatedAt {other}"),
                );
            }
        }
        let status = field(v, "Status");
        rec.check(
            "volume.get.status",
            matches!(status, None | Some(Value::Null | Value::Object(_))),
            "an object or nothing",
            format!("Status {}", status.unwrap_or(&Value::Null)),
        );
    }
    rec.spelling(
        "volume.get.field-case",
        r.misspelled_keys(FIELDS),
        r.summary(),
    );
    let read = adapter(ctx).get(name).await;
    rec.check(
        "volume.get.adapter",
        matches!(&read, Ok(Some(v)) if v.name == name),
        "the adapter reads the volume",
        match read {
            Ok(Some(v)) => format!("{} at {}", v.name, v.host_mountpoint),
            Ok(None) => "no volume".into(),
            Err(e) => e.to_string(),
        },
    );
}

async fn list(ctx: &Context<'_>, rec: &mut Recorder<'_>, name: &str) {
    let r = match ctx.call("VolumeDriver.List", json!({})).await {
        Ok(r) => r,
        Err(e) => {
            rec.check("volume.list.shape", false, "an answer", e);
            return;
        }
    };
    let volumes = r.field("Volumes").and_then(Value::as_array);
    let shaped = r.succeeded()
        && volumes.is_some_and(|vs| {
            vs.iter()
                .all(|v| v.is_object() && field(v, "Name").is_some_and(Value::is_string))
        });
    rec.check(
        "volume.list.shape",
        shaped,
        "{\"Volumes\":[{\"Name\":…,\"Mountpoint\":…}]}",
        r.summary(),
    );
    let listed = volumes.is_some_and(|vs| vs.iter().any(|v| str_field(v, "Name") == name));
    rec.check(
        "volume.list.contains",
        listed,
        format!("{name} listed"),
        r.summary(),
    );
    rec.spelling(
        "volume.list.field-case",
        r.misspelled_keys(FIELDS),
        "as Docker writes them",
    );
    let read = adapter(ctx).list().await;
    rec.check(
        "volume.list.adapter",
        matches!(&read, Ok(vs) if vs.iter().any(|v| v.name == name)),
        format!("the adapter lists {name}"),
        match read {
            Ok(vs) => format!("{} volumes", vs.len()),
            Err(e) => e.to_string(),
        },
    );
}

/// Checks the file at `path` holds `content`; `found` is what a pass reports.
fn check_holds(
    rec: &mut Recorder<'_>,
    id: &str,
    path: &std::path::Path,
    content: &str,
    expected: &str,
    found: String,
) {
    let read = std::fs::read_to_string(path);
    rec.check(
        id,
        matches!(&read, Ok(c) if c == content),
        expected,
        match read {
            Ok(_) => found,
            Err(e) => format!("{}: {e}", path.display()),
        },
    );
}

/// Whether a Path or Mount answer succeeded with `mounted` as its mountpoint.
fn mounted_at(r: &Reply, mounted: &str) -> bool {
    r.succeeded() && r.text("Mountpoint") == mounted
}

/// Path, Mount twice, Unmount per ID, data through the mount.
async fn mounts(ctx: &Context<'_>, rec: &mut Recorder<'_>, name: &str) {
    match ctx.call("VolumeDriver.Path", json!({"Name": name})).await {
        Ok(r) => {
            rec.expect(
                "volume.path.before-mount",
                r.succeeded(),
                Outcome::Warn,
                "success (Mountpoint may be empty)",
                r.summary(),
            );
        }
        Err(e) => {
            rec.check("volume.path.before-mount", false, "an answer", e);
        }
    }

    let first = mount_id();
    let second = mount_id();
    let mounted = match ctx
        .call("VolumeDriver.Mount", json!({"Name": name, "ID": first}))
        .await
    {
        Ok(r) => {
            let mp = r.text("Mountpoint").to_string();
            let ok = r.succeeded() && !mp.is_empty();
            rec.check(
                "volume.mount.answers",
                ok,
                "{\"Mountpoint\":\"/…\"}",
                r.summary(),
            );
            if !ok {
                rec.block(format!("Mount failed: {}", r.summary()));
                return;
            }
            mp
        }
        Err(e) => {
            rec.check("volume.mount.answers", false, "an answer", &e);
            rec.block(e);
            return;
        }
    };
    rec.check(
        "volume.mount.absolute",
        mounted.starts_with('/'),
        "an absolute path",
        &mounted,
    );
    let host = ctx.plugin.paths.host_path(&mounted);
    let host_dir = std::path::PathBuf::from(&host);
    let marker = host_dir.join(format!("{}.txt", ctx.unique("data")));
    let content = format!("written by berth conformance {}\n", mount_id());
    let mut data_ok = false;
    if !ctx.host_visible {
        for id in [
            "volume.mount.host-visible",
            "volume.mount.write-read",
            "volume.unmount.keeps-other",
            "volume.mount.remount-data",
        ] {
            rec.skip(id, "the plugin's paths are not on this host");
        }
    } else {
        let is_dir = host_dir.is_dir();
        rec.check(
            "volume.mount.host-visible",
            is_dir,
            "a directory on the host",
            format!("{host}{}", if is_dir { "" } else { ": no such directory" }),
        );
        if is_dir {
            let written =
                std::fs::write(&marker, &content).and_then(|()| std::fs::read_to_string(&marker));
            data_ok = matches!(&written, Ok(c) if *c == content);
            rec.check(
                "volume.mount.write-read",
                data_ok,
                "the file reads back",
                match written {
                    Ok(c) if c == content => format!("{} read back", marker.display()),
                    Ok(c) => format!("read {c:?}"),
                    Err(e) => format!("{}: {e}", marker.display()),
                },
            );
        } else {
            rec.skip(
                "volume.mount.write-read",
                "the mountpoint is not on the host",
            );
        }
    }

    rec.answered(
        "volume.path.after-mount",
        &ctx.call("VolumeDriver.Path", json!({"Name": name})).await,
        |r| mounted_at(r, &mounted),
        format!("Mountpoint {mounted:?}"),
    );

    rec.answered(
        "volume.mount.second-id",
        &ctx.call("VolumeDriver.Mount", json!({"Name": name, "ID": second}))
            .await,
        |r| mounted_at(r, &mounted),
        format!("Mountpoint {mounted:?}"),
    );

    // Remove while mounted (a refusal is right). If it went through, the volume is made and
    // mounted by both IDs again so that the unmount checks judge Unmount, not this removal;
    // what was written may be gone with it, so the data checks are not made.
    let mut data_lost = None;
    match ctx.call("VolumeDriver.Remove", json!({"Name": name})).await {
        Ok(r) if r.is_error() => rec.pass("volume.remove.mounted", r.summary()),
        Ok(r) => {
            rec.record(
                "volume.remove.mounted",
                Outcome::Warn,
                "an error: the volume is in use",
                format!("removed while mounted: {}", r.summary()),
            );
            let _ = ctx
                .call(
                    "VolumeDriver.Create",
                    json!({"Name": name, "Opts": opts_value(&ctx.options.volume_opts)}),
                )
                .await;
            for id in [&first, &second] {
                let _ = ctx
                    .call("VolumeDriver.Mount", json!({"Name": name, "ID": id}))
                    .await;
            }
            data_lost = Some("the plugin removed the volume while mounted (volume.remove.mounted)");
        }
        Err(e) => {
            rec.check("volume.remove.mounted", false, "an answer", e);
        }
    }

    let unmount = |id: String| {
        let body = json!({"Name": name, "ID": id});
        async move { ctx.call("VolumeDriver.Unmount", body).await }
    };
    rec.succeeded("volume.unmount.first-id", &unmount(first).await);
    if let (true, Some(why)) = (ctx.host_visible, data_lost) {
        rec.skip("volume.unmount.keeps-other", why);
    } else if ctx.host_visible && data_ok {
        check_holds(
            rec,
            "volume.unmount.keeps-other",
            &marker,
            &content,
            "the file is still there for the other ID",
            "still there".to_string(),
        );
    } else if ctx.host_visible {
        rec.skip("volume.unmount.keeps-other", "nothing was written");
    }
    rec.succeeded("volume.unmount.last-id", &unmount(second).await);

    // Mount again: the data is still there.
    if let (true, Some(why)) = (ctx.host_visible, data_lost) {
        rec.skip("volume.mount.remount-data", why);
    } else if ctx.host_visible && data_ok {
        let third = mount_id();
        match ctx
            .call("VolumeDriver.Mount", json!({"Name": name, "ID": third}))
            .await
        {
            Ok(r) if r.succeeded() => {
                let mp = str_field(r.json.as_ref().unwrap_or(&Value::Null), "Mountpoint");
                let again = std::path::PathBuf::from(ctx.plugin.paths.host_path(&mp))
                    .join(marker.file_name().unwrap_or_default());
                check_holds(
                    rec,
                    "volume.mount.remount-data",
                    &again,
                    &content,
                    "the file written before is there",
                    format!("{} read back", again.display()),
                );
                let _ = std::fs::remove_file(&again);
            }
            Ok(r) => {
                rec.check(
                    "volume.mount.remount-data",
                    false,
                    "Mount succeeds",
                    r.summary(),
                );
            }
            Err(e) => {
                rec.check("volume.mount.remount-data", false, "Mount answers", e);
            }
        }
        let _ = unmount(third).await;
    } else if ctx.host_visible {
        rec.skip("volume.mount.remount-data", "nothing was written");
    }
}

async fn remove(ctx: &Context<'_>, rec: &mut Recorder<'_>, name: &str) {
    match ctx.call("VolumeDriver.Remove", json!({"Name": name})).await {
        Ok(r) => {
            if !rec.check(
                "volume.remove.unmounted",
                r.succeeded(),
                "success",
                r.summary(),
            ) {
                rec.skip("volume.remove.gone", "Remove failed");
                return;
            }
        }
        Err(e) => {
            rec.check("volume.remove.unmounted", false, "an answer", e);
            return;
        }
    }
    let got = ctx.call("VolumeDriver.Get", json!({"Name": name})).await;
    let listed = ctx.call("VolumeDriver.List", json!({})).await;
    let still_got =
        matches!(&got, Ok(r) if r.succeeded() && r.field("Volume").is_some_and(Value::is_object));
    let still_listed = matches!(&listed, Ok(r) if r.field("Volumes").and_then(Value::as_array).is_some_and(|vs| vs.iter().any(|v| str_field(v, "Name") == name)));
    rec.check(
        "volume.remove.gone",
        !still_got && !still_listed,
        "Get answers no volume, List lacks it",
        match (still_got, still_listed) {
            (false, false) => "gone".to_string(),
            (true, _) => format!(
                "Get still answers {}",
                got.map(|r| r.summary()).unwrap_or_default()
            ),
            (false, true) => "List still has it".to_string(),
        },
    );
}

/// Calls about a volume that does not exist.
async fn unknown(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let ghost = ctx.unique("ghost");
    match ctx.call("VolumeDriver.Get", json!({"Name": ghost})).await {
        Ok(r) => {
            let volume = r.field("Volume").is_some_and(Value::is_object);
            rec.check(
                "volume.get.unknown",
                r.is_error() || !volume,
                "an error or Volume: null",
                r.summary(),
            );
        }
        Err(e) => {
            rec.check("volume.get.unknown", false, "an answer", e);
        }
    }
    rec.answered(
        "volume.mount.unknown",
        &ctx.call(
            "VolumeDriver.Mount",
            json!({"Name": ghost, "ID": mount_id()}),
        )
        .await,
        Reply::is_error,
        "an error",
    );
    match ctx
        .call("VolumeDriver.Remove", json!({"Name": ghost}))
        .await
    {
        Ok(r) => {
            rec.expect(
                "volume.remove.unknown",
                r.is_error(),
                Outcome::Warn,
                "an error",
                r.summary(),
            );
        }
        Err(e) => {
            rec.check("volume.remove.unknown", false, "an answer", e);
        }
    }
}

async fn parallel(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    if !rec.wants("volume.create.parallel") {
        return;
    }
    let names: Vec<String> = (0..PARALLEL_VOLUMES).map(|_| ctx.unique("par")).collect();
    let opts = opts_value(&ctx.options.volume_opts);
    let creates = names.iter().map(|n| {
        ctx.call(
            "VolumeDriver.Create",
            json!({"Name": n, "Opts": opts.clone()}),
        )
    });
    let created = futures_util::future::join_all(creates).await;
    let listed = ctx.call("VolumeDriver.List", json!({})).await;
    let listed: Vec<String> = match &listed {
        Ok(r) => r
            .field("Volumes")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().map(|v| str_field(v, "Name")).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let failed: Vec<String> = created
        .iter()
        .zip(&names)
        .filter_map(|(c, n)| match c {
            Ok(r) if r.succeeded() && listed.contains(n) => None,
            Ok(r) if r.succeeded() => Some(format!("{n}: not listed")),
            Ok(r) => Some(format!("{n}: {}", r.summary())),
            Err(e) => Some(format!("{n}: {e}")),
        })
        .collect();
    rec.check(
        "volume.create.parallel",
        failed.is_empty(),
        format!("{PARALLEL_VOLUMES} volumes created and listed"),
        if failed.is_empty() {
            "all created and listed".to_string()
        } else {
            failed.join("; ")
        },
    );
    let removes = names
        .iter()
        .map(|n| ctx.call("VolumeDriver.Remove", json!({"Name": n})));
    futures_util::future::join_all(removes).await;
}
