//! Names a pulled plugin gets: the remote it comes from (`PluginReference`) and its local name
//! (`Name`, or the `--alias`), as moby derives them.

use crate::distribution::reference::Reference;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullNames {
    /// What to fetch: tagged (`:latest` by default) or by digest.
    pub remote: Reference,
    /// The local name, familiar and tagged (`vieux/sshfs:latest`).
    pub name: String,
    /// Recorded as `PluginReference`: fully qualified (`docker.io/vieux/sshfs:latest`).
    pub plugin_reference: String,
}

/// Why the names of a pull cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullNameError {
    /// The remote or the alias is no valid reference: what the client sent is wrong (the API
    /// classes it per version).
    #[error("{0}")]
    BadReference(String),
    #[error("cannot use digest in plugin tag")]
    DigestAlias,
}

/// `remote` as the client sent it, `alias` the `name` query parameter (may be empty).
pub fn pull_names(remote: &str, alias: &str) -> Result<PullNames, PullNameError> {
    let bad = |e: crate::distribution::reference::ReferenceError| {
        PullNameError::BadReference(e.to_string())
    };
    let parsed = Reference::parse_normalized(remote).map_err(bad)?;
    // With both, the digest is what is fetched; the tag only names the plugin.
    let remembered_tag = parsed.tag.clone();
    let remote_ref = if parsed.digest.is_some() {
        Reference {
            tag: None,
            ..parsed
        }
    } else {
        parsed.with_default_tag()
    };
    let name = if alias.is_empty() {
        let tag = remembered_tag.unwrap_or_else(|| "latest".to_string());
        format!("{}:{tag}", remote_ref.familiar_name())
    } else {
        let alias_ref = Reference::parse_normalized(alias).map_err(bad)?;
        if alias_ref.digest.is_some() {
            return Err(PullNameError::DigestAlias);
        }
        alias_ref.with_default_tag().familiar_string()
    };
    Ok(PullNames {
        plugin_reference: remote_ref.full_string(),
        remote: remote_ref,
        name,
    })
}

/// The name an upgrade goes by (in its `pull` event): the plugin as the client named it, with
/// `:latest` added when that is a bare name (moby's `getName`, which does not normalise it).
pub fn upgrade_name(requested: &str) -> String {
    match Reference::parse_normalized(requested) {
        Ok(r) if r.is_name_only() => format!("{requested}:latest"),
        _ => requested.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1d3c3e42c12138da5ef7873b97f7f32cf99fb6edde75fa4f0bcf9ed277855811";

    #[test]
    fn names_come_from_the_remote_with_latest() {
        let n = pull_names("docker.io/vieux/sshfs", "").unwrap();
        assert_eq!(n.name, "vieux/sshfs:latest");
        assert_eq!(n.plugin_reference, "docker.io/vieux/sshfs:latest");
        let n = pull_names("127.0.0.1:5000/test/rclone:1", "").unwrap();
        assert_eq!(n.name, "127.0.0.1:5000/test/rclone:1");
        assert_eq!(n.plugin_reference, "127.0.0.1:5000/test/rclone:1");
    }

    #[test]
    fn an_alias_names_the_plugin_but_not_its_reference() {
        let n = pull_names("127.0.0.1:5000/test/rclone:1", "rclone").unwrap();
        assert_eq!(n.name, "rclone:latest");
        assert_eq!(n.plugin_reference, "127.0.0.1:5000/test/rclone:1");
        let err = pull_names("x/y", &format!("a@{DIGEST}")).unwrap_err();
        assert_eq!(err, PullNameError::DigestAlias);
    }

    #[test]
    fn digests_are_fetched_and_a_given_tag_is_remembered() {
        let n = pull_names(&format!("localhost:5000/foo@{DIGEST}"), "").unwrap();
        assert_eq!(n.name, "localhost:5000/foo:latest");
        assert_eq!(n.plugin_reference, format!("localhost:5000/foo@{DIGEST}"));
        assert_eq!(n.remote.digest.as_deref(), Some(DIGEST));
        let n = pull_names(&format!("localhost:5000/foo:v2@{DIGEST}"), "").unwrap();
        assert_eq!(n.name, "localhost:5000/foo:v2");
        assert_eq!(n.remote.tag, None);
    }

    #[test]
    fn upgrades_go_by_the_requested_name() {
        assert_eq!(upgrade_name("myalias"), "myalias:latest");
        assert_eq!(upgrade_name("myalias:latest"), "myalias:latest");
        assert_eq!(upgrade_name("docker.io/a/b:1"), "docker.io/a/b:1");
        assert_eq!(upgrade_name("ABC"), "ABC");
    }

    #[test]
    fn bad_references_are_the_clients_fault() {
        assert!(matches!(
            pull_names("Foo/bar", ""),
            Err(PullNameError::BadReference(_))
        ));
    }
}
