//! Plugins from registries: privileges of a remote, pull (install), upgrade and push, with
//! Docker's progress stream. Downloads are verified by the registry client; layers are
//! unpacked into a staging rootfs while they download (`distribution::pipeline`: unverified
//! bytes only ever reach that private rootfs, which is discarded unless every download was
//! verified and every layer unpacked); nothing becomes visible until one commit under the
//! store lock, so a failure or a client that goes away leaves no plugin and no referenced blob.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{decode_config_stream, PluginConfig, PluginSettings};
use super::manager::{Manager, NewPluginParts};
use super::names::{upgrade_name, PullNames};
use super::privileges::{compute_privileges, grants_match, PluginPrivilege};
use crate::distribution::blobstore::StagedBlob;
use crate::distribution::pipeline::{Feed, LayerPipeline, Unpacked};
use crate::distribution::reference::Reference;
use crate::distribution::registry::{
    AuthConfig, Manifest, RegistryError, Session, MEDIA_TYPE_DOCKER_MANIFEST,
};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::fsutil;
use crate::progress::{self, Progress, ProgressReceiver, StreamError};

/// A remote whose manifest is known, ready to be fetched.
pub struct Resolved {
    session: Session,
    manifest: Manifest,
}

/// What was fetched for a plugin, staged but not yet visible.
struct Fetched {
    manifest: Manifest,
    config: PluginConfig,
    /// Manifest, config and layer blobs in the ingest area (committed with the plugin).
    staged: Vec<StagedBlob>,
    /// The unpacked rootfs.
    rootfs: PathBuf,
}

/// Progress updates of a transfer, at most every 100 ms (plus the final one).
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

impl Manager {
    /// `GET /plugins/privileges`: what the remote plugin would need. moby answers an empty
    /// list for any fetch failure; only an image (not a plugin) is an error.
    pub async fn remote_privileges(
        &self,
        remote: &Reference,
        auth: &AuthConfig,
    ) -> Result<Option<Vec<PluginPrivilege>>> {
        let fetched = async {
            let session = self.registry.session(remote, auth, false).await?;
            let manifest = session.fetch_manifest().await?;
            let raw = session
                .fetch_blob_bytes(&manifest.config, self.registry.options().max_config_bytes)
                .await?;
            Ok::<_, RegistryError>(raw)
        }
        .await;
        match fetched {
            Ok(raw) => Ok(Some(
                decode_config_stream(&raw)
                    .map(|c| compute_privileges(&c))
                    .unwrap_or_default(),
            )),
            Err(RegistryError::WrongMediaType { .. }) => Err(Error::System(format!(
                "did not find plugin config for specified reference {}",
                remote.full_string()
            ))),
            Err(e) => {
                log::info!("privileges of {}: {e}", remote.full_string());
                Ok(None)
            }
        }
    }

    /// `POST /plugins/pull`: checks that can fail fast (the name is free, the remote
    /// resolves) answer as plain errors; then the transfer runs, streaming its progress: fetch,
    /// verify, check the grant, unpack, commit the plugin (disabled).
    pub async fn pull(
        self: &Arc<Self>,
        names: PullNames,
        granted: Vec<PluginPrivilege>,
        auth: AuthConfig,
    ) -> Result<ProgressReceiver> {
        if self.store().name_taken(&names.name) {
            return Err(Error::InvalidParameter(format!(
                "plugin {} already exists",
                names.name
            )));
        }
        let resolved = self.resolve_remote(&names.remote, &auth).await?;
        let manager = self.clone();
        Ok(progress::spawn(move |progress| async move {
            manager.install(resolved, &names, &granted, &progress).await
        }))
    }

    /// `POST /plugins/{name}/upgrade`: the plugin must exist and be disabled, and the remote
    /// resolve, before the transfer streams. Returns the plugin's name and the stream.
    pub async fn upgrade(
        self: &Arc<Self>,
        name: &str,
        names: PullNames,
        granted: Vec<PluginPrivilege>,
        auth: AuthConfig,
    ) -> Result<(String, ProgressReceiver)> {
        let plugin = self.get(name)?;
        self.check_upgradable(&plugin.id)?;
        let resolved = self.resolve_remote(&names.remote, &auth).await?;
        let manager = self.clone();
        let id = plugin.id.clone();
        let names = PullNames {
            name: upgrade_name(name),
            ..names
        };
        let stream = progress::spawn(move |progress| async move {
            manager
                .upgrade_to(resolved, &id, &names, &granted, &progress)
                .await
        });
        Ok((plugin.name, stream))
    }

    /// `POST /plugins/{name}/push`, streaming its progress.
    pub fn push(self: &Arc<Self>, name: &str, auth: AuthConfig) -> Result<ProgressReceiver> {
        let id = self.get(name)?.id;
        let manager = self.clone();
        Ok(progress::spawn(move |progress| async move {
            manager.push_stored(&id, &auth, &progress).await
        }))
    }

    /// `POST /auth` (`docker login`): checks the credentials with the registry plugins come
    /// from; returns the identity token, if the registry's token server gave one.
    pub async fn login(&self, auth: &AuthConfig) -> Result<String> {
        Ok(self.registry.login(auth).await?)
    }

    /// Opens a registry session and fetches the manifest before anything is streamed, so a
    /// remote that does not resolve is a plain HTTP error, as with moby.
    async fn resolve_remote(&self, remote: &Reference, auth: &AuthConfig) -> Result<Resolved> {
        let resolved = async {
            let session = self.registry.session(remote, auth, false).await?;
            let manifest = session.fetch_manifest().await?;
            Ok::<_, RegistryError>(Resolved { session, manifest })
        }
        .await;
        resolved.map_err(|e| Error::from(e).context("error resolving plugin reference"))
    }

    /// The transfer of a pull.
    async fn install(
        &self,
        resolved: Resolved,
        names: &PullNames,
        granted: &[PluginPrivilege],
        progress: &Progress,
    ) -> std::result::Result<(), StreamError> {
        let fetched = self.fetch(resolved, names, granted, progress).await?;
        let Fetched {
            manifest,
            config,
            staged,
            rootfs,
        } = fetched;
        let parts = NewPluginParts {
            settings: PluginSettings::init_from(&config),
            config,
            plugin_reference: names.plugin_reference.clone(),
            config_digest: manifest.config.digest.clone(),
            blobsums: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            manifest_digest: manifest.digest.clone(),
        };
        if progress.is_cancelled() {
            self.discard(&rootfs, &staged);
            return Err(StreamError::Cancelled);
        }
        if let Err(e) = self.commit_new(&names.name, parts, &rootfs, &staged) {
            self.discard(&rootfs, &staged);
            return Err(StreamError::Failed(e));
        }
        Ok(())
    }

    /// The transfer of an upgrade: the disabled plugin `id` gets the new config and rootfs and
    /// keeps its ID, name and settings. The old rootfs comes back if anything fails.
    async fn upgrade_to(
        &self,
        resolved: Resolved,
        id: &str,
        names: &PullNames,
        granted: &[PluginPrivilege],
        progress: &Progress,
    ) -> std::result::Result<(), StreamError> {
        self.check_upgradable(id)?;
        let fetched = self.fetch(resolved, names, granted, progress).await?;
        if progress.is_cancelled() {
            self.discard(&fetched.rootfs, &fetched.staged);
            return Err(StreamError::Cancelled);
        }
        let result = self.swap_in(id, &names.plugin_reference, &fetched);
        if result.is_err() {
            self.discard(&fetched.rootfs, &fetched.staged);
        }
        result.map_err(StreamError::Failed)
    }

    /// The plugin exists and is disabled (moby's check before an upgrade).
    fn check_upgradable(&self, name: &str) -> Result<()> {
        let store = self.store();
        let plugin = &store.resolve(name)?.plugin;
        if plugin.enabled {
            return Err(Error::Conflict(format!(
                "plugin must be disabled before upgrading: plugin {} is enabled",
                plugin.name
            )));
        }
        Ok(())
    }

    /// The commit point of an upgrade, under the plugin's operation lock (so no enable runs
    /// meanwhile) and the store lock.
    fn swap_in(&self, id: &str, plugin_reference: &str, fetched: &Fetched) -> Result<()> {
        let lock = self.operation_lock(id);
        let _operation = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut store = self.store();
        let mut record = store.resolve(id)?.clone();
        if record.plugin.enabled {
            return Err(Error::Conflict(format!(
                "plugin must be disabled before upgrading: plugin {} is enabled",
                record.plugin.name
            )));
        }
        let dir = store.plugin_dir(id);
        let current = dir.join("rootfs");
        let old = dir.join("rootfs-old");
        fsutil::remove_all(&old)?;
        fs::rename(&current, &old)?;
        let swapped = (|| -> Result<()> {
            fs::rename(&fetched.rootfs, &current)?;
            for blob in &fetched.staged {
                self.blobs.commit(blob)?;
            }
            record.plugin.config = fetched.config.clone();
            record.plugin.plugin_reference = plugin_reference.to_string();
            record.config_digest = fetched.manifest.config.digest.clone();
            record.blobsums = fetched
                .manifest
                .layers
                .iter()
                .map(|l| l.digest.clone())
                .collect();
            record.manifest_digest = fetched.manifest.digest.clone();
            store.save(record)
        })();
        match swapped {
            Ok(()) => {
                if let Err(e) = fsutil::remove_all(&old) {
                    log::warn!("removing the previous rootfs of {id}: {e}");
                }
                self.blobs.collect_garbage(&store.referenced_blobs())?;
                Ok(())
            }
            Err(e) => {
                let _ = fsutil::remove_all(&current);
                let _ = fs::rename(&old, &current);
                Err(e)
            }
        }
    }

    fn discard(&self, rootfs: &Path, staged: &[StagedBlob]) {
        let _ = fsutil::remove_all(rootfs);
        for blob in staged {
            self.blobs.discard(blob);
        }
    }

    /// Fetches manifest, config and layers (each verified), checks the grant against the
    /// config, and unpacks the layers into a staging rootfs.
    ///
    /// dockerd reports a `pull` event (actor: the remote, `name`: the local name) once the
    /// download is done, before it checks the grant; berth checks the grant before
    /// downloading layers, so a refused grant reports the event dockerd would have sent too.
    async fn fetch(
        &self,
        resolved: Resolved,
        names: &PullNames,
        granted: &[PluginPrivilege],
        progress: &Progress,
    ) -> std::result::Result<Fetched, StreamError> {
        let mut staged: Vec<StagedBlob> = Vec::new();
        let rootfs = self
            .plugins_root
            .join("tmp")
            .join(format!(".rootfs{}", fsutil::random_hex(8)));
        let result = self
            .fetch_into(resolved, names, granted, progress, &rootfs, &mut staged)
            .await;
        match result {
            Ok((manifest, config)) => {
                self.pulled(names);
                Ok(Fetched {
                    manifest,
                    config,
                    staged,
                    rootfs,
                })
            }
            Err(e) => {
                self.discard(&rootfs, &staged);
                Err(e)
            }
        }
    }

    fn pulled(&self, names: &PullNames) {
        let remote = names.remote.familiar_string();
        self.events
            .publish(Event::plugin(&remote, &names.name, "pull"));
    }

    async fn fetch_into(
        &self,
        resolved: Resolved,
        names: &PullNames,
        granted: &[PluginPrivilege],
        progress: &Progress,
        rootfs: &Path,
        staged: &mut Vec<StagedBlob>,
    ) -> std::result::Result<(Manifest, PluginConfig), StreamError> {
        let Resolved { session, manifest } = resolved;
        let remote = &names.remote;
        let id = remote
            .tag
            .clone()
            .or_else(|| remote.digest.clone())
            .unwrap_or_else(|| "latest".into());
        progress
            .status(
                Some(&id),
                format!("Pulling from {}", remote.familiar_name()),
            )
            .await?;
        progress
            .status(None, format!("Digest: {}", manifest.digest))
            .await?;
        let raw_config = session
            .fetch_blob_bytes(&manifest.config, self.registry.options().max_config_bytes)
            .await
            .map_err(Error::from)?;
        let mut config = decode_config_stream(&raw_config).map_err(|e| {
            StreamError::Failed(Error::System(format!("failed to parse config: {e}")))
        })?;
        // The grant is checked as soon as the config is known: a mismatch costs no layer
        // download and leaves nothing behind.
        if !grants_match(&compute_privileges(&config), granted) {
            self.pulled(names);
            return Err(StreamError::Failed(Error::System(
                "incorrect privileges".into(),
            )));
        }
        staged.push(self.blobs.stage_bytes(&manifest.raw)?);
        staged.push(self.blobs.stage_bytes(&raw_config)?);

        let layers: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.is_layer())
            .cloned()
            .collect();
        if layers.is_empty() {
            return Err(StreamError::Failed(Error::System(
                "fetched plugin image but plugin config is missing".into(),
            )));
        }
        // The statuses dockerd 20.10 shows (a non-TTY CLI prints them): `Waiting` only for
        // layers to download, `Already exists` for stored ones, progress-only `Extracting`.
        for layer in layers.iter().filter(|l| !self.blobs.contains(&l.digest)) {
            progress.layer(&layer.short_id(), "Waiting").await?;
        }
        fs::create_dir_all(rootfs).map_err(Error::from)?;
        let mut pipeline = LayerPipeline::start(rootfs, self.unpack_limit);
        let fetched = self
            .fetch_layers(&session, &layers, progress, &mut pipeline, staged)
            .await;
        // Whatever happened, nothing writes below the rootfs once this returns (the caller
        // discards it on failure).
        pipeline.finish(fetched.is_err()).await;
        fetched?;
        config.rootfs.get_or_insert_with(Default::default);
        Ok((manifest, config))
    }

    /// Downloads the layers one after the other while `pipeline` unpacks them, then reports
    /// each layer's unpacking in order. Statuses as before the overlap: every `Download
    /// complete` (or `Already exists`) first, then `Extracting` and `Complete` per layer. A
    /// failed download is reported before a failed unpacking, as when the two were sequential
    /// (unverified bytes that do not unpack are most likely the wrong bytes).
    async fn fetch_layers(
        &self,
        session: &Session,
        layers: &[crate::distribution::registry::Descriptor],
        progress: &Progress,
        pipeline: &mut LayerPipeline,
        staged: &mut Vec<StagedBlob>,
    ) -> std::result::Result<(), StreamError> {
        let mut unpacking: Vec<(String, u64, Unpacked)> = Vec::new();
        for layer in layers {
            let short = layer.short_id();
            if self.blobs.contains(&layer.digest) {
                progress.layer(&short, "Already exists").await?;
                let unpacked = pipeline.unpack_stored(self.blobs.path(&layer.digest));
                unpacking.push((short, layer.size, unpacked));
                continue;
            }
            let path = self.blobs.ingest_path();
            let (feed, unpacked) = pipeline.unpack_growing(path.clone());
            let blob = self
                .download(session, layer, &short, progress, path, &feed)
                .await?;
            staged.push(blob);
            unpacking.push((short, layer.size, unpacked));
        }
        for (short, size, unpacked) in unpacking {
            progress
                .send(progress.transfer(&short, "Extracting", size, size))
                .await?;
            let gone = progress.closed();
            futures_util::pin_mut!(gone);
            let result = match futures_util::future::select(unpacked, gone).await {
                futures_util::future::Either::Left((result, _)) => result,
                futures_util::future::Either::Right(_) => return Err(StreamError::Cancelled),
            };
            result
                .map_err(|_| {
                    Error::System(format!("failed to extract layer {short}: worker failed"))
                })?
                .map_err(|e| Error::System(format!("failed to extract layer {short}: {e}")))?;
            progress.layer(&short, "Complete").await?;
        }
        Ok(())
    }

    /// Downloads `layer` into the ingest file `path`, reporting to `feed` how far the file is
    /// written and whether the download ended verified.
    async fn download(
        &self,
        session: &Session,
        layer: &crate::distribution::registry::Descriptor,
        short: &str,
        progress: &Progress,
        path: PathBuf,
        feed: &Feed,
    ) -> std::result::Result<StagedBlob, StreamError> {
        // Progress as dockerd reports it: it looks every 100 ms, says `Pulling fs layer` the
        // first time it sees the download under way, then `Downloading` with the bytes so
        // far; a layer that finishes between two looks goes straight to `Download complete`.
        let mut ticks = Throttle {
            last: Some(Instant::now()),
        };
        let mut pulling = false;
        let total = layer.size;
        let mut report = |written: u64| {
            feed.advance(written);
            if written < total && ticks.due() {
                if !pulling {
                    pulling = true;
                    progress.try_send(progress.state(short, "Pulling fs layer"));
                }
                progress.try_send(progress.transfer(short, "Downloading", written, total));
            }
        };
        // Racing the download against the client going away: dropping the fetch removes its
        // partial file.
        let fetched = {
            let fetch = session.fetch_blob_to_file(layer, &path, &mut report);
            let gone = progress.closed();
            futures_util::pin_mut!(fetch, gone);
            match futures_util::future::select(fetch, gone).await {
                futures_util::future::Either::Left((fetched, _)) => fetched,
                futures_util::future::Either::Right(_) => {
                    feed.end(false);
                    return Err(StreamError::Cancelled);
                }
            }
        };
        feed.end(fetched.is_ok());
        fetched.map_err(Error::from)?;
        crate::metrics::install_bytes(layer.size);
        if let Err(cancelled) = progress.layer(short, "Download complete").await {
            // Not staged yet: nobody else would remove it.
            let _ = fs::remove_file(&path);
            return Err(cancelled.into());
        }
        Ok(StagedBlob {
            path,
            digest: layer.digest.clone(),
            size: layer.size,
        })
    }

    /// The transfer of a push: uploads the stored blobs (skipping those the registry has) and
    /// the stored manifest bytes unchanged, so push then pull is byte-identical.
    async fn push_stored(
        &self,
        name: &str,
        auth: &AuthConfig,
        progress: &Progress,
    ) -> std::result::Result<(), StreamError> {
        let record = self.store().resolve(name)?.clone();
        let target = Reference::parse_normalized(&record.plugin.name)
            .map_err(|e| Error::System(e.to_string()))?
            .with_default_tag();
        let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
        let raw = self
            .blobs
            .read(&record.manifest_digest)
            .map_err(Error::from)?;
        let parsed: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Error::System(format!("stored manifest: {e}")))?;
        let descriptors =
            |v: &serde_json::Value| -> Vec<crate::distribution::registry::Descriptor> {
                serde_json::from_value(v.clone()).unwrap_or_default()
            };
        let mut blobs = descriptors(&parsed["layers"]);
        if let Ok(config) = serde_json::from_value(parsed["config"].clone()) {
            blobs.push(config);
        }
        progress
            .status(
                None,
                format!("The push refers to repository [{}]", target.name()),
            )
            .await?;
        // dockerd 20.10 announces every blob and the manifest twice, then reports each
        // `Upload complete`; the digest travels only in the aux message.
        let manifest_id = crate::distribution::registry::Descriptor {
            media_type: MEDIA_TYPE_DOCKER_MANIFEST.to_string(),
            digest: record.manifest_digest.clone(),
            size: raw.len() as u64,
        }
        .short_id();
        for _ in 0..2 {
            for blob in &blobs {
                progress.layer(&blob.short_id(), "Preparing").await?;
            }
            progress.layer(&manifest_id, "Preparing").await?;
        }
        // Whatever goes wrong with the registry from here is reported as dockerd words it.
        let digest = self
            .upload(&target, auth, &blobs, &tag, &raw, progress)
            .await
            .map_err(|e| match e {
                StreamError::Failed(e) => StreamError::Failed(e.context("error pushing plugin")),
                cancelled => cancelled,
            })?;
        progress.layer(&manifest_id, "Upload complete").await?;
        progress
            .aux(serde_json::json!({"Tag": tag, "Digest": digest, "Size": raw.len()}))
            .await?;
        Ok(())
    }

    /// The registry part of a push: the blobs the registry lacks, then the manifest; returns
    /// the manifest's digest.
    async fn upload(
        &self,
        target: &Reference,
        auth: &AuthConfig,
        blobs: &[crate::distribution::registry::Descriptor],
        tag: &str,
        manifest: &[u8],
        progress: &Progress,
    ) -> std::result::Result<String, StreamError> {
        let session = self
            .registry
            .session(target, auth, true)
            .await
            .map_err(Error::from)?;
        for blob in blobs {
            let short = blob.short_id();
            if session.blob_exists(blob).await.map_err(Error::from)? {
                progress.layer(&short, "Layer already exists").await?;
                continue;
            }
            let mut throttle = Throttle { last: None };
            let reporter = progress.clone();
            let (id, total) = (short.clone(), blob.size);
            let mut report = move |current: u64| {
                if throttle.due() {
                    reporter.try_send(reporter.transfer(&id, "Pushing", current, total));
                }
            };
            let path = self.blobs.path(&blob.digest);
            let upload = session.push_blob_from_file(blob, &path, &mut report);
            let gone = progress.closed();
            futures_util::pin_mut!(upload, gone);
            match futures_util::future::select(upload, gone).await {
                futures_util::future::Either::Left((pushed, _)) => pushed.map_err(Error::from)?,
                futures_util::future::Either::Right(_) => return Err(StreamError::Cancelled),
            }
            progress.layer(&short, "Upload complete").await?;
        }
        Ok(session
            .push_manifest(tag, MEDIA_TYPE_DOCKER_MANIFEST, manifest)
            .await
            .map_err(Error::from)?)
    }
}
