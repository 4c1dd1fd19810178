//! The registry client (src/distribution/registry/) against real registries on loopback —
//! Debian's `docker-registry` (distribution 2.8), plain and with htpasswd basic auth — and against
//! a scripted stand-in registry that serves hostile answers: wrong digests, truncated and
//! overlong blobs, oversized manifests, image manifests, multi-platform indexes, stalls and a
//! Bearer token flow whose scope is asserted.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::distribution::blobstore::BlobStore;
use berth::distribution::extract::unpack_layer;
use berth::distribution::reference::Reference;
use berth::distribution::registry::{
    AuthConfig, Descriptor, RegistryClient, RegistryError, RegistryOptions, Session,
    MEDIA_TYPE_DOCKER_IMAGE_CONFIG, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_PLUGIN_CONFIG,
};
use common::http::find_header;
use registry::*;

// ---- helpers ----------------------------------------------------------------------------------

fn reference(s: &str) -> Reference {
    Reference::parse_normalized(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn client(options: RegistryOptions) -> RegistryClient {
    RegistryClient::new(options).unwrap()
}

/// A session of `c` with `remote` (`host/repository[:tag]`), for pushing or pulling.
async fn open(c: &RegistryClient, remote: &str, auth: &AuthConfig, push: bool) -> Session {
    c.session(&reference(remote), auth, push)
        .await
        .unwrap_or_else(|e| panic!("session with {remote}: {e}"))
}

/// An anonymous session with `repository` on `stand_in`, with short deadlines.
async fn stand_in_session(
    stand_in: &StandIn,
    repository: &str,
    push: bool,
) -> Result<Session, RegistryError> {
    let remote = reference(&format!("{}/{repository}", stand_in.host()));
    let c = client(quick_options());
    c.session(&remote, &AuthConfig::default(), push).await
}

/// What `stand_in`'s endless replies wrote until the client hung up.
async fn written_once_hung_up(stand_in: &StandIn) -> u64 {
    let hung_up = common::eventually_async(Duration::from_secs(60), || stand_in.all_hung_up());
    assert!(hung_up.await, "the client kept a connection open for 60 s");
    stand_in.written.load(Ordering::Relaxed)
}

/// Short deadlines for the stand-in scenarios.
fn quick_options() -> RegistryOptions {
    RegistryOptions {
        request_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_millis(500),
        max_manifest_bytes: 1 << 20,
        ..Default::default()
    }
}

/// A plugin artifact as `docker plugin create` + push produce it.
struct Artifact {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    config_desc: Descriptor,
    layer_desc: Descriptor,
}

fn build_artifact(greeting: &str) -> Artifact {
    let config = serde_json::to_vec(&serde_json::json!({
        "description": "registry client test plugin",
        "entrypoint": ["/bin/hello"],
        "interface": {"socket": "hello.sock", "types": ["docker.volumedriver/1.0"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_uid(0);
    dir.set_gid(0);
    dir.set_mtime(0);
    tar.append_data(&mut dir, "bin/", &[][..]).unwrap();
    let body = format!("{greeting}\n");
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o755);
    file.set_size(body.len() as u64);
    file.set_uid(0);
    file.set_gid(0);
    file.set_mtime(0);
    tar.append_data(&mut file, "bin/hello", body.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let config_desc = desc(MEDIA_TYPE_PLUGIN_CONFIG, &config);
    let layer_desc = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &layer);
    let manifest = manifest_json(&config_desc, std::slice::from_ref(&layer_desc));
    Artifact {
        config,
        layer,
        manifest,
        config_desc,
        layer_desc,
    }
}

/// Pushes `artifact` as `tag` and returns the manifest digest.
async fn push_artifact(session: &Session, artifact: &Artifact, tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (name, d, bytes) in [
        ("layer", &artifact.layer_desc, &artifact.layer),
        ("config", &artifact.config_desc, &artifact.config),
    ] {
        let path = write_file(dir.path(), name, bytes);
        let mut seen = Vec::new();
        session
            .push_blob_from_file(d, &path, &mut |n| seen.push(n))
            .await
            .unwrap_or_else(|e| panic!("pushing {name}: {e}"));
        assert_eq!(
            seen.last(),
            Some(&d.size),
            "{name} progress ends at its size"
        );
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }
    session
        .push_manifest(tag, MEDIA_TYPE_DOCKER_MANIFEST, &artifact.manifest)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn push_then_pull_round_trips_byte_identical_on_docker_registry() {
    let registry = DockerRegistry::start(None);
    let host = registry.host();
    let c = client(RegistryOptions::default());
    let artifact = build_artifact("hello from the registry");
    let anonymous = AuthConfig::from_header("e30=");

    let push = open(&c, &format!("{host}/berth/hello:v1"), &anonymous, true).await;
    // Loopback is insecure: HTTPS was tried first, then plain HTTP answered.
    assert_eq!(push.endpoint(), format!("http://{host}"));
    assert_eq!(push.repository(), "berth/hello");
    assert!(!push.blob_exists(&artifact.layer_desc).await.unwrap());
    assert!(!push.blob_exists(&artifact.config_desc).await.unwrap());
    let digest = push_artifact(&push, &artifact, "v1").await;
    assert_eq!(digest, digest_of(&artifact.manifest));
    assert!(push.blob_exists(&artifact.layer_desc).await.unwrap());
    assert!(push.blob_exists(&artifact.config_desc).await.unwrap());

    // Pull by tag: the same bytes come back.
    let pull = open(&c, &format!("{host}/berth/hello:v1"), &anonymous, false).await;
    let m = pull.fetch_manifest().await.unwrap();
    assert_eq!(m.digest, digest);
    assert_eq!(m.media_type, MEDIA_TYPE_DOCKER_MANIFEST);
    assert_eq!(m.raw, artifact.manifest);
    assert_eq!(m.config, artifact.config_desc);
    assert_eq!(m.layers, vec![artifact.layer_desc.clone()]);
    assert_eq!(m.index_digest, None);
    let config = pull
        .fetch_blob_bytes(&m.config, c.options().max_config_bytes)
        .await
        .unwrap();
    assert_eq!(config, artifact.config);

    // The layer streams into the blob store and unpacks.
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::open(root.path()).unwrap();
    let mut seen = Vec::new();
    let staged = pull
        .fetch_blob_to_store(&store, &m.layers[0], &mut |n| seen.push(n))
        .await
        .unwrap();
    assert_eq!(seen.last(), Some(&artifact.layer_desc.size));
    assert_eq!(std::fs::read(&staged.path).unwrap(), artifact.layer);
    store.commit(&staged).unwrap();
    assert_eq!(
        store.read(&artifact.layer_desc.digest).unwrap(),
        artifact.layer
    );
    let rootfs = tempfile::tempdir().unwrap();
    unpack_layer(
        std::fs::File::open(store.path(&artifact.layer_desc.digest)).unwrap(),
        rootfs.path(),
        berth::distribution::extract::UnpackLimit::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.path().join("bin/hello")).unwrap(),
        "hello from the registry\n"
    );

    // Pull by digest, and through `localhost` (insecure too).
    for r in [
        format!("{host}/berth/hello@{digest}"),
        format!("localhost:{}/berth/hello:v1", registry.port),
    ] {
        let s = c.session(&reference(&r), &anonymous, false).await.unwrap();
        let again = s.fetch_manifest().await.unwrap();
        assert_eq!(again.raw, artifact.manifest, "{r}");
        assert_eq!(again.digest, digest, "{r}");
    }

    // Unknown tag and unknown repository.
    for (r, expected) in [
        (
            format!("{host}/berth/hello:nope"),
            format!("{host}/berth/hello:nope: not found"),
        ),
        (
            format!("{host}/berth/absent"),
            format!("{host}/berth/absent:latest: not found"),
        ),
    ] {
        let s = c.session(&reference(&r), &anonymous, false).await.unwrap();
        let err = s.fetch_manifest().await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(err.to_string(), expected);
    }
    let missing = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, b"never pushed");
    let err = pull.fetch_blob_bytes(&missing, 1024).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    // An image (image config) is refused with dockerd's text.
    let image_config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let image_config_desc = desc(MEDIA_TYPE_DOCKER_IMAGE_CONFIG, image_config);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "image-config", image_config);
    push.push_blob_from_file(&image_config_desc, &path, &mut |_| {})
        .await
        .unwrap();
    let image_manifest = manifest_json(
        &image_config_desc,
        std::slice::from_ref(&artifact.layer_desc),
    );
    push.push_manifest("image", MEDIA_TYPE_DOCKER_MANIFEST, &image_manifest)
        .await
        .unwrap();
    let s = open(&c, &format!("{host}/berth/hello:image"), &anonymous, false).await;
    let err = s.fetch_manifest().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Encountered remote "application/vnd.docker.container.image.v1+json"(image) when fetching"#
    );
}

#[actix_rt::test]
async fn htpasswd_registry_needs_basic_credentials() {
    let registry = DockerRegistry::start(Some(("alice", "s3cret")));
    let host = registry.host();
    let c = client(RegistryOptions::default());
    let artifact = build_artifact("basic auth");
    let r = reference(&format!("{host}/alice/private:1.0"));

    // Anonymous: the session opens (the ping only learns the Basic challenge) but every
    // repository request is refused with the registry's own error.
    let anonymous = AuthConfig::default();
    let s = c.session(&r, &anonymous, false).await.unwrap();
    let err = s.fetch_manifest().await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err:?}");
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    let s = c.session(&r, &anonymous, true).await.unwrap();
    let err = s
        .push_manifest("1.0", MEDIA_TYPE_DOCKER_MANIFEST, &artifact.manifest)
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");

    // A wrong password is refused the same way.
    let wrong = AuthConfig::from_header(
        &base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"alice","password":"guess"}"#),
    );
    let s = c.session(&r, &wrong, false).await.unwrap();
    assert!(s.fetch_manifest().await.unwrap_err().is_unauthorized());

    // The X-Registry-Auth credentials work for push and pull.
    let good = AuthConfig::from_header(
        &base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"alice","password":"s3cret","serveraddress":"x"}"#),
    );
    let push = c.session(&r, &good, true).await.unwrap();
    let digest = push_artifact(&push, &artifact, "1.0").await;
    let pull = c.session(&r, &good, false).await.unwrap();
    let m = pull.fetch_manifest().await.unwrap();
    assert_eq!(
        (m.digest.as_str(), &m.raw),
        (digest.as_str(), &artifact.manifest)
    );
    // ... and so does the legacy `auth` field alone.
    let legacy = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cret"),
        ..Default::default()
    };
    let pull = c.session(&r, &legacy, false).await.unwrap();
    let layer = pull.fetch_blob_bytes(&m.layers[0], 1 << 20).await.unwrap();
    assert_eq!(layer, artifact.layer);
}

// ---- the stand-in registry ------------------------------------------------------------------

// ---- hostile blobs --------------------------------------------------------------------------

/// Fetches `d` from a stand-in answering every blob request with `reply()`, into a file and
/// into memory; both must fail and leave nothing behind.
async fn fetch_hostile_blob(
    d: &Descriptor,
    reply: impl Fn() -> Reply + Send + Sync + 'static,
) -> (RegistryError, RegistryError, StandIn) {
    let stand_in = StandIn::start(move |req| {
        if req.path() == "/v2/" {
            ok("application/json", b"{}")
        } else {
            reply()
        }
    });
    let s = stand_in_session(&stand_in, "hostile/blob", false)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    let mut progress = Vec::new();
    let to_file = s
        .fetch_blob_to_file(d, &path, &mut |n| progress.push(n))
        .await
        .unwrap_err();
    assert!(!path.exists(), "no partial file after {to_file}");
    assert!(dir_is_empty(dir.path()));
    assert!(progress.iter().all(|n| *n <= d.size));
    let in_memory = s.fetch_blob_bytes(d, 1 << 30).await.unwrap_err();
    (to_file, in_memory, stand_in)
}

#[actix_rt::test]
async fn a_blob_with_the_wrong_digest_is_refused() {
    let good = b"the bytes the manifest promised".to_vec();
    let d = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &good);
    let evil = b"the bytes the registry delivers".to_vec();
    assert_eq!(good.len(), evil.len());
    let evil_digest = digest_of(&evil);
    let (to_file, in_memory, _s) =
        fetch_hostile_blob(&d, move || ok("application/octet-stream", &evil)).await;
    for err in [to_file, in_memory] {
        assert_eq!(
            err,
            RegistryError::DigestMismatch {
                expected: d.digest.clone(),
                actual: evil_digest.clone()
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "unexpected commit digest {evil_digest}, expected {}: failed precondition",
                d.digest
            )
        );
    }
}

#[actix_rt::test]
async fn a_truncated_blob_is_refused() {
    let full = vec![7u8; 100_000];
    let d = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &full);
    // The connection closes half way through the announced length.
    let half = full[..50_000].to_vec();
    let (to_file, in_memory, _s) = fetch_hostile_blob(&d, move || Reply::Partial {
        content_length: Some(100_000),
        body: half.clone(),
        hold: None,
    })
    .await;
    for err in [to_file, in_memory] {
        match &err {
            RegistryError::Truncated {
                digest,
                expected,
                received,
            } => {
                assert_eq!((digest, *expected), (&d.digest, 100_000));
                assert!(*received <= 50_000, "{err}");
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert!(err.to_string().contains("unexpected EOF"), "{err}");
    }
    // An honest but short answer is just as short.
    let short = full[..10].to_vec();
    let (to_file, _, _s) =
        fetch_hostile_blob(&d, move || ok("application/octet-stream", &short)).await;
    assert_eq!(
        to_file.to_string(),
        format!(
            "failed to fetch {}: unexpected EOF after 10 of 100000 bytes",
            d.digest
        )
    );
}

#[actix_rt::test]
async fn a_blob_longer_than_its_descriptor_is_cut_off() {
    let promised = vec![b' '; 1000];
    let d = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &promised);
    // With a Content-Length, and streamed without one: reading stops right after the size.
    for content_length in [Some(100 << 20), None] {
        let (to_file, in_memory, stand_in) = fetch_hostile_blob(&d, move || Reply::Endless {
            content_type: "application/octet-stream".into(),
            content_length,
        })
        .await;
        for err in [to_file, in_memory] {
            assert_eq!(
                err,
                RegistryError::TooLong {
                    digest: d.digest.clone(),
                    expected: 1000
                }
            );
        }
        let written = written_once_hung_up(&stand_in).await;
        assert!(
            written < 32 << 20,
            "the client kept reading: {written} bytes"
        );
    }
}

#[actix_rt::test]
async fn a_stalled_blob_download_fails_at_the_stall_deadline() {
    let full = vec![3u8; 200_000];
    let d = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &full);
    let half = full[..100_000].to_vec();
    let started = Instant::now();
    let (to_file, in_memory, stand_in) = fetch_hostile_blob(&d, move || Reply::Partial {
        content_length: Some(200_000),
        body: half.clone(),
        hold: Some(Duration::from_secs(30)),
    })
    .await;
    // Two downloads, each given up after 500 ms without data.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let url = format!(
        "http://{}/v2/hostile/blob/blobs/{}",
        stand_in.host(),
        d.digest
    );
    for err in [to_file, in_memory] {
        assert!(err.is_transport(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("Get \"{url}\": no data transferred for 500ms")
        );
    }
}

// ---- hostile manifests ----------------------------------------------------------------------

async fn fetch_manifest_from(
    stand_in: &StandIn,
    r: &str,
) -> Result<berth::distribution::registry::Manifest, RegistryError> {
    stand_in_session(stand_in, r, false)
        .await?
        .fetch_manifest()
        .await
}

#[actix_rt::test]
async fn an_oversized_manifest_is_refused_without_reading_it() {
    for content_length in [Some(100u64 << 20), None] {
        let stand_in = StandIn::start(move |req| {
            if req.path() == "/v2/" {
                ok("application/json", b"{}")
            } else {
                Reply::Endless {
                    content_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
                    content_length,
                }
            }
        });
        let started = Instant::now();
        let err = fetch_manifest_from(&stand_in, "big/manifest:latest")
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::TooLarge { limit, .. } if limit == 1 << 20),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("exceeds the limit of 1048576 bytes"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let written = written_once_hung_up(&stand_in).await;
        let read = format!("{content_length:?}: the client read {written} bytes");
        assert!(written < 32 << 20, "{read} of a 100 MiB manifest");
    }
}

#[actix_rt::test]
async fn manifest_digests_are_verified() {
    let artifact = build_artifact("digests");
    let other = build_artifact("something else");
    // Asked for by digest, served other bytes.
    let wanted = digest_of(&artifact.manifest);
    let stand_in = StandIn::start(simple_registry(
        vec![(
            wanted.clone(),
            MEDIA_TYPE_DOCKER_MANIFEST.into(),
            other.manifest.clone(),
        )],
        vec![],
    ));
    let err = fetch_manifest_from(&stand_in, &format!("hostile/digest@{wanted}"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::DigestMismatch {
            expected: wanted.clone(),
            actual: digest_of(&other.manifest)
        }
    );
    // Asked for by tag, with a Docker-Content-Digest that does not match the bytes.
    let body = artifact.manifest.clone();
    let lie = digest_of(&other.manifest);
    let stand_in = StandIn::start(move |req| match req.path() {
        "/v2/" => ok("application/json", b"{}"),
        _ => Reply::Full {
            status: 200,
            headers: vec![
                ("Content-Type".into(), MEDIA_TYPE_DOCKER_MANIFEST.into()),
                ("Docker-Content-Digest".into(), lie.clone()),
            ],
            body: body.clone(),
        },
    });
    let err = fetch_manifest_from(&stand_in, "hostile/digest:v1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn manifests_that_are_not_plugins_are_refused() {
    let layer = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, b"layer");
    let image = manifest_json(
        &desc(MEDIA_TYPE_DOCKER_IMAGE_CONFIG, b"{}"),
        std::slice::from_ref(&layer),
    );
    let odd = manifest_json(&desc("application/x-something", b"{}"), &[layer]);
    let schema1 =
        br#"{"schemaVersion":1,"name":"hostile/x","tag":"v1","fsLayers":[],"history":[]}"#.to_vec();
    let stand_in = StandIn::start(simple_registry(
        vec![
            served("image", MEDIA_TYPE_DOCKER_MANIFEST, &image),
            served("odd", MEDIA_TYPE_DOCKER_MANIFEST, &odd),
            served(
                "schema1",
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                &schema1,
            ),
        ],
        vec![],
    ));
    let text = |r: &'static str| {
        let stand_in = &stand_in;
        async move {
            fetch_manifest_from(stand_in, r)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert_eq!(
        text("hostile/x:image").await,
        r#"Encountered remote "application/vnd.docker.container.image.v1+json"(image) when fetching"#
    );
    assert_eq!(
        text("hostile/x:odd").await,
        r#"Encountered remote "application/x-something"(unknown) when fetching"#
    );
    assert_eq!(
        text("hostile/x:schema1").await,
        r#"unsupported manifest media type "application/vnd.docker.distribution.manifest.v1+prettyjws""#
    );
    assert_eq!(
        text("hostile/x:missing").await,
        format!("{}/hostile/x:missing: not found", stand_in.host())
    );
}

#[actix_rt::test]
async fn an_index_resolves_to_this_platform() {
    let ours = build_artifact("ours");
    let arm = build_artifact("arm");
    let win = build_artifact("windows");
    let entry = |a: &Artifact, os: &str, arch: &str| index_entry(&a.manifest, Some((os, arch)));
    let other_arch = if go_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let index = index_json(
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        &[
            entry(&arm, "linux", other_arch),
            entry(&win, "windows", go_arch()),
            entry(&ours, "linux", go_arch()),
        ],
    );
    // An OCI index with one entry and no platform (as some plugin indexes are written).
    let bare = index_json(MEDIA_TYPE_OCI_INDEX, &[index_entry(&ours.manifest, None)]);
    let foreign = index_json(
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        &[
            entry(&arm, "linux", other_arch),
            entry(&win, "windows", go_arch()),
        ],
    );
    let stand_in = StandIn::start(simple_registry(
        vec![
            served("multi", MEDIA_TYPE_DOCKER_MANIFEST_LIST, &index),
            served("bare", MEDIA_TYPE_OCI_INDEX, &bare),
            served("foreign", MEDIA_TYPE_DOCKER_MANIFEST_LIST, &foreign),
            served("arm", MEDIA_TYPE_DOCKER_MANIFEST, &arm.manifest),
            served("win", MEDIA_TYPE_DOCKER_MANIFEST, &win.manifest),
            served("ours", MEDIA_TYPE_DOCKER_MANIFEST, &ours.manifest),
        ],
        vec![],
    ));
    let m = fetch_manifest_from(&stand_in, "hostile/idx:multi")
        .await
        .unwrap();
    assert_eq!(m.digest, digest_of(&ours.manifest));
    assert_eq!(m.raw, ours.manifest);
    assert_eq!(m.index_digest, Some(digest_of(&index)));
    assert_eq!(m.config, ours.config_desc);
    // Only the index and the chosen manifest were fetched.
    let manifest_requests: Vec<String> = stand_in
        .seen()
        .iter()
        .filter(|r| r.path().contains("/manifests/"))
        .map(|r| r.path().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        manifest_requests,
        vec!["multi".to_string(), digest_of(&ours.manifest)]
    );
    // Accept names all four manifest types, one per header line.
    let first = &stand_in.seen()[1];
    let accepts: Vec<&str> = first
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(accepts.len(), 4, "{accepts:?}");

    let m = fetch_manifest_from(&stand_in, "hostile/idx:bare")
        .await
        .unwrap();
    assert_eq!(
        (m.digest.clone(), m.index_digest),
        (digest_of(&ours.manifest), Some(digest_of(&bare)))
    );

    let err = fetch_manifest_from(&stand_in, "hostile/idx:foreign")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no matching manifest for linux/{} in the manifest list entries",
            go_arch()
        )
    );
}

#[actix_rt::test]
async fn an_index_entry_must_match_the_manifest_it_names() {
    let ours = build_artifact("ours");
    let other = build_artifact("other");
    let index = index_json(
        MEDIA_TYPE_OCI_INDEX,
        &[index_entry(&ours.manifest, Some(("linux", go_arch())))],
    );
    let wanted = digest_of(&ours.manifest);
    let stand_in = StandIn::start(simple_registry(
        vec![
            served("idx", MEDIA_TYPE_OCI_INDEX, &index),
            served(&wanted, MEDIA_TYPE_DOCKER_MANIFEST, &other.manifest),
        ],
        vec![],
    ));
    let err = fetch_manifest_from(&stand_in, "hostile/idx:idx")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::DigestMismatch {
            expected: wanted,
            actual: digest_of(&other.manifest)
        }
    );
}

// ---- auth -----------------------------------------------------------------------------------

/// A registry requiring `Bearer <token>` whose token service (`/token` on the same port) issues
/// a token per scope: `alice:s3cret` or the refresh token `REFRESH` get full access, anonymous
/// callers a token that the registry refuses. The first token issued for a scope is "expired":
/// the registry refuses it once, so the client must fetch a new one mid-session.
fn bearer_registry(artifact: &Artifact) -> StandIn {
    let manifests: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::new(Mutex::new(HashMap::from([(
        "latest".to_string(),
        artifact.manifest.clone(),
    )])));
    let config = artifact.config.clone();
    let issued = Arc::new(AtomicUsize::new(0));
    let port = Arc::new(Mutex::new(0u16));
    let port_for_handler = port.clone();
    let stand_in = StandIn::start(move |req| {
        let port = *port_for_handler.lock().unwrap();
        let challenge =
            format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="stand-in""#);
        let unauthorized = || {
            status(
                401,
                &[
                    ("WWW-Authenticate", &challenge),
                    ("Content-Type", "application/json"),
                ],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Class":"plugin","Name":"plugins/secure","Action":"pull"}]}]}"#,
            )
        };
        if req.path() == "/token" {
            let scopes: Vec<String> = params(req, "scope")
                .iter()
                .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
                .collect();
            let basic = find_header(&req.headers, "authorization").map(str::to_string);
            let good_basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
            );
            let who = if req.method == "POST" {
                if params(req, "grant_type") == ["refresh_token"]
                    && params(req, "refresh_token") == ["REFRESH"]
                {
                    "full"
                } else {
                    return status(401, &[], r#"{"details":"invalid refresh token"}"#);
                }
            } else {
                match basic {
                    Some(b) if b == good_basic => "full",
                    Some(_) => {
                        return status(401, &[], r#"{"details":"incorrect username or password"}"#)
                    }
                    None => "anon",
                }
            };
            let n = issued.fetch_add(1, Ordering::SeqCst);
            let token = format!("{who}|{}|{n}", scopes.join(" "));
            return ok(
                "application/json",
                serde_json::to_vec(&serde_json::json!({"access_token": token}))
                    .unwrap()
                    .as_slice(),
            );
        }
        let token = find_header(&req.headers, "authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let mut fields = token.split('|');
        let (who, scope, serial) = (
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
        );
        if req.path() == "/v2/" {
            return if who.is_empty() {
                unauthorized()
            } else {
                ok("application/json", b"{}")
            };
        }
        let needs_push = req.method == "PUT" || req.method == "POST";
        let scope_ok = scope.split(' ').any(|s| {
            s == "repository(plugin):plugins/secure:pull"
                || s == "repository(plugin):plugins/secure:pull,push"
        }) && (!needs_push
            || scope.contains("repository(plugin):plugins/secure:pull,push"));
        // Token 0 stands for an expired one.
        if who != "full" || !scope_ok || serial == "0" {
            return unauthorized();
        }
        let path = req.path();
        if let Some((_, tag)) = path.split_once("/manifests/") {
            if req.method == "PUT" {
                manifests
                    .lock()
                    .unwrap()
                    .insert(tag.to_string(), req.body.clone());
                let d = digest_of(&req.body);
                return status(201, &[("Docker-Content-Digest", &d)], "");
            }
            return match manifests.lock().unwrap().get(tag) {
                Some(m) => ok(MEDIA_TYPE_DOCKER_MANIFEST, m),
                None => not_found(),
            };
        }
        if path.ends_with("/blobs/uploads/") {
            return status(
                202,
                &[("Location", "/v2/plugins/secure/blobs/uploads/u1?_state=s")],
                "",
            );
        }
        if path.contains("/blobs/uploads/") {
            return status(201, &[], "");
        }
        if path.contains("/blobs/") {
            return ok("application/octet-stream", &config);
        }
        status(404, &[], "")
    });
    *port.lock().unwrap() = stand_in.port;
    stand_in
}

#[actix_rt::test]
async fn bearer_tokens_are_requested_with_the_plugin_scope() {
    let artifact = build_artifact("bearer");
    let stand_in = bearer_registry(&artifact);
    let c = client(quick_options());
    let r = reference(&format!("{}/plugins/secure", stand_in.host()));
    let alice = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };

    let s = c.session(&r, &alice, false).await.unwrap();
    let m = s.fetch_manifest().await.unwrap();
    assert_eq!(m.raw, artifact.manifest);
    let config = s.fetch_blob_bytes(&m.config, 1 << 20).await.unwrap();
    assert_eq!(config, artifact.config);
    let tokens: Vec<Req> = stand_in
        .seen()
        .into_iter()
        .filter(|r| r.path() == "/token")
        .collect();
    // One token at the ping (refused later as expired), one more after the 401.
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    for t in &tokens {
        assert_eq!(t.method, "GET");
        assert_eq!(
            params(t, "scope"),
            ["repository(plugin):plugins/secure:pull"]
        );
        assert_eq!(params(t, "service"), ["stand-in"]);
        assert_eq!(params(t, "account"), ["alice"]);
    }

    // Push asks for pull,push and uploads with the token (relative Location resolved).
    let push = c.session(&r, &alice, true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "config", &artifact.config);
    push.push_blob_from_file(&artifact.config_desc, &path, &mut |_| {})
        .await
        .unwrap();
    let digest = push
        .push_manifest("v2", MEDIA_TYPE_DOCKER_MANIFEST, &artifact.manifest)
        .await
        .unwrap();
    assert_eq!(digest, digest_of(&artifact.manifest));
    let seen = stand_in.seen();
    let push_token = seen.iter().rev().find(|r| r.path() == "/token").unwrap();
    assert_eq!(
        params(push_token, "scope"),
        ["repository(plugin):plugins/secure:pull,push"]
    );
    let put = seen
        .iter()
        .find(|r| r.method == "PUT" && r.path().contains("/blobs/uploads/u1"))
        .unwrap();
    assert_eq!(params(put, "_state"), ["s"]);
    assert_eq!(
        params(put, "digest"),
        vec![artifact.config_desc.digest.clone()]
    );
    assert_eq!(put.body, artifact.config);
    assert!(find_header(&put.headers, "authorization")
        .unwrap()
        .starts_with("Bearer full|"));

    // An identity token uses the refresh-token grant.
    let identity = AuthConfig::from_header(
        &base64::engine::general_purpose::URL_SAFE.encode(r#"{"identitytoken":"REFRESH"}"#),
    );
    let s = c.session(&r, &identity, false).await.unwrap();
    assert_eq!(s.fetch_manifest().await.unwrap().raw, artifact.manifest);
    let post = stand_in
        .seen()
        .into_iter()
        .rev()
        .find(|r| r.path() == "/token")
        .unwrap();
    assert_eq!(post.method, "POST");
    assert_eq!(params(&post, "grant_type"), ["refresh_token"]);
    assert_eq!(
        params(&post, "scope"),
        ["repository(plugin):plugins/secure:pull"]
    );
    assert_eq!(params(&post, "client_id"), ["berth"]);

    // Anonymous gets a token the registry refuses; a wrong password no token at all.
    let s = c.session(&r, &AuthConfig::default(), false).await.unwrap();
    let err = s.fetch_manifest().await.unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    let wrong = AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = c.session(&r, &wrong, false).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "unauthorized: incorrect username or password"
    );
}

#[actix_rt::test]
async fn upload_locations_may_be_absolute() {
    let blob = b"absolute location".to_vec();
    let d = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &blob);
    let port = Arc::new(Mutex::new(0u16));
    let p = port.clone();
    let stand_in = StandIn::start(move |req| match (req.method.as_str(), req.path()) {
        ("GET", "/v2/") => ok("application/json", b"{}"),
        ("POST", "/v2/up/load/blobs/uploads/") => {
            let location = format!(
                "http://127.0.0.1:{}/elsewhere/u2?_state=xyz",
                p.lock().unwrap()
            );
            status(202, &[("Location", &location)], "")
        }
        ("PUT", "/elsewhere/u2") => status(201, &[], ""),
        _ => status(404, &[], ""),
    });
    *port.lock().unwrap() = stand_in.port;
    let s = stand_in_session(&stand_in, "up/load", true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "blob", &blob);
    s.push_blob_from_file(&d, &path, &mut |_| {}).await.unwrap();
    let put = stand_in
        .seen()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(params(&put, "_state"), ["xyz"]);
    assert_eq!(params(&put, "digest"), vec![d.digest.clone()]);
    assert_eq!(put.body, blob);

    // A file that does not match its descriptor is not uploaded.
    let wrong = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, b"something else entirely");
    let err = s
        .push_blob_from_file(&wrong, &path, &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Io(_)), "{err:?}");
    // Nor is one whose bytes changed since its digest was computed: the last chunk is held
    // back, so the registry never receives a complete body.
    let same_size = desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, b"ABSOLUTE LOCATION");
    let err = s
        .push_blob_from_file(&same_size, &path, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::DigestMismatch {
            expected: same_size.digest.clone(),
            actual: d.digest.clone()
        }
    );
    thread::sleep(Duration::from_millis(100));
    let puts = stand_in
        .seen()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 1, "the bad upload never completed");
}

#[actix_rt::test]
async fn registry_mirrors_serve_docker_hub_pulls_first() {
    let artifact = build_artifact("mirrored");
    let stand_in = StandIn::start(simple_registry(
        vec![served(
            "1.0",
            MEDIA_TYPE_DOCKER_MANIFEST,
            &artifact.manifest,
        )],
        vec![artifact.config.clone()],
    ));
    let c = client(RegistryOptions {
        mirrors: vec![format!("http://{}", stand_in.host())],
        ..quick_options()
    });
    let s = c
        .session(&reference("vieux/sshfs:1.0"), &AuthConfig::default(), false)
        .await
        .unwrap();
    assert_eq!(s.endpoint(), format!("http://{}", stand_in.host()));
    let m = s.fetch_manifest().await.unwrap();
    assert_eq!(m.raw, artifact.manifest);
    assert!(stand_in
        .seen()
        .iter()
        .any(|r| r.path() == "/v2/vieux/sshfs/manifests/1.0"));
}

#[actix_rt::test]
async fn an_unreachable_registry_is_a_transport_error_naming_the_url() {
    let port = free_port();
    let c = client(quick_options());
    let err = c
        .session(
            &reference(&format!("127.0.0.1:{port}/gone/away")),
            &AuthConfig::default(),
            false,
        )
        .await
        .unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    // HTTPS first, then plain HTTP; the last failure is reported.
    assert_eq!(
        err.to_string(),
        format!("Get \"http://127.0.0.1:{port}/v2/\": dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
}
