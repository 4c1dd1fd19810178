//! Names a pulled plugin gets: the remote it comes from (`PluginReference`) and its local name
//! (`Name`, or the `--alias`), as moby derives them.

use crate::distribution::reference::Reference;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullNames {
    /// What to fetch: tagged (`:latest` by default) or by digest.
    pub remote: Reference,
    /// The local name, familiar and tagged (`vieux/sshfs:latest`).
    pub name: String,
    /// Recorded as `PluginReference`: fully qualified (`docker.io/vieux/sshfs:latest`).
    pub plugin_reference: String,
}

/// `remote` as the client sent it, `alias` the `name` query parameter (may be empty).
/// Reference errors are invalid parameters from API 1.42 and untyped (500) before.
pub fn pull_names(remote: &str, alias: &str, legacy: bool) -> Result<PullNames> {
    let classify = |message: String| {
        if legacy {
            Error::System(message)
        } else {
            Error::InvalidParameter(message)
        }
    };
    let parsed = Reference::parse_normalized(remote).map_err(|e| classify(e.to_string()))?;
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
        let alias_ref = Reference::parse_normalized(alias).map_err(|e| classify(e.to_string()))?;
        if alias_ref.digest.is_some() {
            return Err(Error::System("cannot use digest in plugin tag".into()));
        }
        alias_ref.with_default_tag().familiar_string()
    };
    Ok(PullNames {
        plugin_reference: remote_ref.full_string(),
        remote: remote_ref,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1d3c3e42c12138da5ef7873b97f7f32cf99fb6edde75fa4f0bcf9ed277855811";

    #[test]
    fn names_come_from_the_remote_with_latest() {
        let n = pull_names("docker.io/vieux/sshfs", "", true).unwrap();
        assert_eq!(n.name, "vieux/sshfs:latest");
        assert_eq!(n.plugin_reference, "docker.io/vieux/sshfs:latest");
        let n = pull_names("127.0.0.1:5000/test/rclone:1", "", true).unwrap();
        assert_eq!(n.name, "127.0.0.1:5000/test/rclone:1");
        assert_eq!(n.plugin_reference, "127.0.0.1:5000/test/rclone:1");
    }

    #[test]
    fn an_alias_names_the_plugin_but_not_its_reference() {
        let n = pull_names("127.0.0.1:5000/test/rclone:1", "rclone", true).unwrap();
        assert_eq!(n.name, "rclone:latest");
        assert_eq!(n.plugin_reference, "127.0.0.1:5000/test/rclone:1");
        let err = pull_names("x/y", &format!("a@{DIGEST}"), true).unwrap_err();
        assert_eq!(err, Error::System("cannot use digest in plugin tag".into()));
    }

    #[test]
    fn digests_are_fetched_and_a_given_tag_is_remembered() {
        let n = pull_names(&format!("localhost:5000/foo@{DIGEST}"), "", true).unwrap();
        assert_eq!(n.name, "localhost:5000/foo:latest");
        assert_eq!(n.plugin_reference, format!("localhost:5000/foo@{DIGEST}"));
        assert_eq!(n.remote.digest.as_deref(), Some(DIGEST));
        let n = pull_names(&format!("localhost:5000/foo:v2@{DIGEST}"), "", true).unwrap();
        assert_eq!(n.name, "localhost:5000/foo:v2");
        assert_eq!(n.remote.tag, None);
    }

    #[test]
    fn bad_references_are_500_before_1_42_and_400_after() {
        assert!(matches!(
            pull_names("Foo/bar", "", true),
            Err(Error::System(_))
        ));
        assert!(matches!(
            pull_names("Foo/bar", "", false),
            Err(Error::InvalidParameter(_))
        ));
    }
}
