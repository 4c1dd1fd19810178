//! Manifests: the media types a plugin pull meets, fetching a manifest (resolving a manifest
//! list / OCI index to this platform's entry, checked against every digest it was chosen by),
//! classifying what was fetched (a plugin, an image, something unusable), and pushing one.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::session::header_str;
use super::{
    check_digest, check_pushed_digest, sha256_digest, valid_tag, RegistryError, Result, Session,
};

/// Config media type of a plugin artifact.
pub const MEDIA_TYPE_PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";
/// Docker image manifest, schema 2 (what plugins are pushed as).
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 1 manifests (refused).
pub const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker image config: a manifest with this config is an image, not a plugin.
pub const MEDIA_TYPE_DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Layer media types moby applies to a plugin's rootfs (others are skipped).
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The `Accept` values of a manifest request, one header line each (moby's fallback format, which
/// every registry version splits correctly).
const MANIFEST_ACCEPT: [&str; 4] = [
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
];

/// A content descriptor (`mediaType`, `digest`, `size`), as in manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<64 hex>` (validated for every descriptor this client returns).
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// A layer moby applies to a plugin rootfs (gzip or plain tar, Docker or OCI types).
    pub fn is_layer(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            MEDIA_TYPE_DOCKER_LAYER_GZIP
                | MEDIA_TYPE_DOCKER_LAYER
                | MEDIA_TYPE_OCI_LAYER
                | MEDIA_TYPE_OCI_LAYER_GZIP
        )
    }

    /// The first 12 hex characters of the digest: the `id` of progress lines.
    pub fn short_id(&self) -> String {
        let hex = self
            .digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h);
        hex.chars().take(12).collect()
    }
}

/// A plugin manifest as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `sha256:` of `raw` (computed, and verified where a digest was expected).
    pub digest: String,
    /// Docker schema 2 or OCI manifest media type.
    pub media_type: String,
    /// The bytes as served: store them as the manifest blob.
    pub raw: Vec<u8>,
    /// The plugin config (media type [`MEDIA_TYPE_PLUGIN_CONFIG`]).
    pub config: Descriptor,
    /// In manifest order.
    pub layers: Vec<Descriptor>,
    /// When the reference named a manifest list / index: its digest (the manifest above was
    /// chosen from it for `linux/<this architecture>`).
    pub index_digest: Option<String>,
}

impl Session {
    /// Fetches the manifest of the reference's digest (or tag, `latest` by default), resolving a
    /// manifest list / OCI index to its `linux/<this architecture>` entry. See [`Manifest`].
    pub async fn fetch_manifest(&self) -> Result<Manifest> {
        loop {
            let index = self.state.lock().unwrap().index;
            match self.fetch_manifest_here().await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    let fallback = self.endpoints[index].mirror
                        && index + 1 < self.endpoints.len()
                        && (e.is_not_found()
                            || e.is_unauthorized()
                            || e.is_transport()
                            || matches!(e, RegistryError::Registry { .. }));
                    if !fallback {
                        return Err(e);
                    }
                    log::info!(
                        "registry mirror {} failed for {}: {e}; trying the next endpoint",
                        self.endpoints[index].base,
                        self.reference
                    );
                    self.connect_from(index + 1).await?;
                }
            }
        }
    }

    /// `PUT /v2/<repo>/manifests/<tag>` with `raw` as `media_type`; returns the manifest digest
    /// (sha256 of `raw`, checked against the registry's `Docker-Content-Digest`).
    pub async fn push_manifest(&self, tag: &str, media_type: &str, raw: &[u8]) -> Result<String> {
        if !valid_tag(tag) && check_digest(tag).is_err() {
            return Err(RegistryError::Protocol(format!("invalid tag {tag:?}")));
        }
        let digest = sha256_digest(raw);
        let url = self.url(&format!("/manifests/{tag}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| {
                RegistryError::Protocol(format!("invalid media type {media_type:?}"))
            })?,
        );
        let resp = self
            .send(
                Method::PUT,
                &url,
                headers,
                Some(Bytes::copy_from_slice(raw)),
            )
            .await?;
        if !resp.status().is_success() {
            let what = format!("{}:{tag}", self.reference.name());
            return Err(self.error_from(resp, "PUT", &url, &what).await);
        }
        check_pushed_digest(resp.headers(), &digest)?;
        Ok(digest)
    }

    async fn fetch_manifest_here(&self) -> Result<Manifest> {
        let (target, by_digest) = match (&self.reference.digest, &self.reference.tag) {
            (Some(d), _) => {
                check_digest(d)?;
                (d.clone(), true)
            }
            (None, Some(t)) => (t.clone(), false),
            (None, None) => ("latest".to_string(), false),
        };
        let display_ref = if by_digest {
            format!("{}@{target}", self.reference.name())
        } else {
            format!("{}:{target}", self.reference.name())
        };
        let expected = by_digest.then(|| target.clone());
        let (raw, header_type) = self
            .get_manifest_bytes(&target, &display_ref, expected.as_deref(), None)
            .await?;
        let parsed = parse_manifest(&raw, header_type.as_deref())?;
        let digest = sha256_digest(&raw);
        match parsed {
            Parsed::Manifest(m) => finish_manifest(m, raw, digest, None),
            Parsed::Index { entries, .. } => {
                let platform = default_platform();
                let entry = select_entry(&entries, &platform)?;
                let limit = self.shared.options.max_manifest_bytes;
                if entry.descriptor.size > limit {
                    return Err(RegistryError::TooLarge {
                        what: format!(
                            "manifest {} ({} bytes)",
                            entry.descriptor.digest, entry.descriptor.size
                        ),
                        limit,
                    });
                }
                let child_ref = format!("{}@{}", self.reference.name(), entry.descriptor.digest);
                let (child_raw, child_type) = self
                    .get_manifest_bytes(
                        &entry.descriptor.digest,
                        &child_ref,
                        Some(&entry.descriptor.digest),
                        Some(entry.descriptor.size),
                    )
                    .await?;
                let child_type = child_type.or_else(|| Some(entry.descriptor.media_type.clone()));
                match parse_manifest(&child_raw, child_type.as_deref())? {
                    Parsed::Manifest(m) => {
                        let child_digest = sha256_digest(&child_raw);
                        finish_manifest(m, child_raw, child_digest, Some(digest))
                    }
                    Parsed::Index { media_type, .. } => {
                        Err(RegistryError::UnsupportedManifest(media_type))
                    }
                }
            }
        }
    }

    /// GET a manifest (tag or digest), bounded; verifies `expected` (digest) and the
    /// `Docker-Content-Digest` header; returns the bytes and the Content-Type.
    async fn get_manifest_bytes(
        &self,
        target: &str,
        display_ref: &str,
        expected: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(&format!("/manifests/{target}"));
        let mut headers = HeaderMap::new();
        for mt in MANIFEST_ACCEPT {
            headers.append(ACCEPT, HeaderValue::from_static(mt));
        }
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let mut resp = self.send(Method::GET, &url, headers, None).await?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "GET", &url, display_ref).await);
        }
        let content_type = header_str(resp.headers(), "content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty());
        let served = header_str(resp.headers(), "docker-content-digest").map(str::to_string);
        let limit = self.shared.options.max_manifest_bytes;
        let raw = self
            .read_bounded(
                &mut resp,
                &url,
                limit,
                &format!("manifest {display_ref}"),
                deadline,
            )
            .await?;
        let actual = sha256_digest(&raw);
        if let Some(exp) = expected {
            if actual != exp {
                return Err(RegistryError::DigestMismatch {
                    expected: exp.to_string(),
                    actual,
                });
            }
        }
        if let Some(served) = served {
            if served.starts_with("sha256:") && served != actual {
                return Err(RegistryError::DigestMismatch {
                    expected: served,
                    actual,
                });
            }
        }
        if let Some(size) = expected_size {
            if raw.len() as u64 != size {
                return Err(RegistryError::Protocol(format!(
                    "manifest {display_ref} is {} bytes, its index entry says {size}",
                    raw.len()
                )));
            }
        }
        Ok((raw, content_type))
    }
}

// ---- manifest parsing ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

/// An entry of a manifest list / OCI index.
#[derive(Debug, Clone, Deserialize)]
struct IndexEntry {
    #[serde(flatten)]
    descriptor: Descriptor,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

struct SingleManifest {
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

enum Parsed {
    Manifest(SingleManifest),
    Index {
        media_type: String,
        entries: Vec<IndexEntry>,
    },
}

fn parse_manifest(raw: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let m: RawManifest = serde_json::from_slice(raw)
        .map_err(|e| RegistryError::Protocol(format!("invalid manifest: {e}")))?;
    let known = |t: &str| {
        MANIFEST_ACCEPT.contains(&t)
            || t == MEDIA_TYPE_DOCKER_SCHEMA1
            || t == MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED
    };
    let media_type = match (&m.media_type, content_type) {
        (Some(t), _) if !t.is_empty() => t.clone(),
        (_, Some(t)) if known(t) => t.to_string(),
        _ if m.schema_version == Some(1) => MEDIA_TYPE_DOCKER_SCHEMA1.to_string(),
        _ if m.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_string(),
        _ if m.config.is_some() => MEDIA_TYPE_OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or("").to_string(),
    };
    match media_type.as_str() {
        MEDIA_TYPE_DOCKER_MANIFEST | MEDIA_TYPE_OCI_MANIFEST => {
            if m.schema_version != Some(2) {
                return Err(RegistryError::Protocol(format!(
                    "invalid manifest: schemaVersion {:?}, expected 2",
                    m.schema_version
                )));
            }
            let config = m.config.ok_or_else(|| {
                RegistryError::Protocol("invalid manifest: no config descriptor".into())
            })?;
            Ok(Parsed::Manifest(SingleManifest {
                media_type,
                config,
                layers: m.layers.unwrap_or_default(),
            }))
        }
        MEDIA_TYPE_DOCKER_MANIFEST_LIST | MEDIA_TYPE_OCI_INDEX => Ok(Parsed::Index {
            media_type,
            entries: m.manifests.unwrap_or_default(),
        }),
        _ => Err(RegistryError::UnsupportedManifest(media_type)),
    }
}

/// Checks a single manifest's descriptors and config type and assembles the result.
fn finish_manifest(
    m: SingleManifest,
    raw: Vec<u8>,
    digest: String,
    index_digest: Option<String>,
) -> Result<Manifest> {
    match m.config.media_type.as_str() {
        MEDIA_TYPE_PLUGIN_CONFIG => {}
        other => {
            let class = match other {
                MEDIA_TYPE_DOCKER_IMAGE_CONFIG | MEDIA_TYPE_OCI_IMAGE_CONFIG => "image",
                _ => "unknown",
            };
            return Err(RegistryError::WrongMediaType {
                media_type: other.to_string(),
                class: class.to_string(),
            });
        }
    }
    check_digest(&m.config.digest)?;
    for layer in &m.layers {
        check_digest(&layer.digest)?;
    }
    Ok(Manifest {
        digest,
        media_type: m.media_type,
        raw,
        config: m.config,
        layers: m.layers,
        index_digest,
    })
}

/// `linux/<GOARCH>` of this machine.
fn default_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    };
    Platform {
        architecture: arch.to_string(),
        os: "linux".to_string(),
        variant: None,
    }
}

/// The index entry for `want`: the first manifest entry for that OS/architecture; otherwise,
/// when the index holds a single manifest entry without a platform (how some plugin indexes are
/// written), that one.
fn select_entry<'a>(entries: &'a [IndexEntry], want: &Platform) -> Result<&'a IndexEntry> {
    let manifests: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| {
            matches!(
                e.descriptor.media_type.as_str(),
                MEDIA_TYPE_DOCKER_MANIFEST | MEDIA_TYPE_OCI_MANIFEST | ""
            )
        })
        .collect();
    let chosen = manifests
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .or_else(|| match manifests.as_slice() {
            [only] if only.platform.as_ref().is_none_or(|p| p.os.is_empty()) => Some(only),
            _ => None,
        })
        .copied()
        .ok_or_else(|| {
            RegistryError::NoMatchingPlatform(format!("{}/{}", want.os, want.architecture))
        })?;
    check_digest(&chosen.descriptor.digest)?;
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest_char: char, platform: Option<(&str, &str)>) -> IndexEntry {
        IndexEntry {
            descriptor: Descriptor {
                media_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
                digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
                size: 10,
            },
            platform: platform.map(|(os, arch)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
        }
    }

    #[test]
    fn platform_selection() {
        let want = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let entries = vec![
            entry('a', Some(("linux", "arm64"))),
            entry('b', Some(("windows", "amd64"))),
            entry('c', Some(("linux", "amd64"))),
        ];
        assert!(select_entry(&entries, &want)
            .unwrap()
            .descriptor
            .digest
            .ends_with('c'));
        let sole = vec![entry('d', None)];
        assert!(select_entry(&sole, &want)
            .unwrap()
            .descriptor
            .digest
            .ends_with('d'));
        let none = vec![entry('a', Some(("linux", "arm64")))];
        assert_eq!(
            select_entry(&none, &want).unwrap_err().to_string(),
            "no matching manifest for linux/amd64 in the manifest list entries"
        );
        let two_bare = vec![entry('a', None), entry('b', None)];
        assert!(select_entry(&two_bare, &want).is_err());
    }

    #[test]
    fn manifests_are_classified() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let plugin = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_PLUGIN_CONFIG, "digest": d('a'), "size": 3},
            "layers": [{"mediaType": MEDIA_TYPE_DOCKER_LAYER_GZIP, "digest": d('b'), "size": 4}],
        });
        let raw = serde_json::to_vec(&plugin).unwrap();
        let Parsed::Manifest(m) = parse_manifest(&raw, None).unwrap() else {
            panic!("a manifest")
        };
        let m = finish_manifest(m, raw.clone(), sha256_digest(&raw), None).unwrap();
        assert_eq!(m.layers[0].size, 4);
        assert!(m.layers[0].is_layer());
        assert_eq!(m.layers[0].short_id(), "bbbbbbbbbbbb");

        // No mediaType field: the Content-Type decides, then the shape.
        let oci = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": MEDIA_TYPE_OCI_IMAGE_CONFIG, "digest": d('a'), "size": 3},
            "layers": [],
        });
        let raw = serde_json::to_vec(&oci).unwrap();
        let Parsed::Manifest(m) = parse_manifest(&raw, Some("application/json")).unwrap() else {
            panic!("a manifest")
        };
        assert_eq!(m.media_type, MEDIA_TYPE_OCI_MANIFEST);
        let err = finish_manifest(m, raw.clone(), sha256_digest(&raw), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Encountered remote "application/vnd.oci.image.config.v1+json"(image) when fetching"#
        );

        let bad_digest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_PLUGIN_CONFIG, "digest": "sha256:../../etc", "size": 3},
            "layers": [],
        });
        let raw = serde_json::to_vec(&bad_digest).unwrap();
        let Parsed::Manifest(m) = parse_manifest(&raw, None).unwrap() else {
            panic!("a manifest")
        };
        assert!(matches!(
            finish_manifest(m, raw, String::new(), None),
            Err(RegistryError::Protocol(_))
        ));

        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(
            parse_manifest(schema1, Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED)),
            Err(RegistryError::UnsupportedManifest(_))
        ));
        let negative =
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:a","size":-1}}"#;
        assert!(matches!(
            parse_manifest(negative, None),
            Err(RegistryError::Protocol(_))
        ));
    }
}
