//! Docker image references (distribution/reference grammar) as moby normalises them for plugins.
//!
//! The grammar and every error text follow the reference package vendored by dockerd 20.10
//! (distribution v2.7/v2.8), confirmed against a running 20.10 daemon:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := domain-component ['.' domain-component]* [':' port-number]
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number      := /[0-9]+/
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]*/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" /[0-9a-fA-F]{32,}/
//! algorithm        := /[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*/
//! ```
//!
//! There is no IPv6 literal support (`[::1]:5000/foo` is refused by 20.10), and an upper-case
//! first component without `.`/`:` is not a domain (`Foo/bar` → "must be lowercase").

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

/// Docker Hub's canonical domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy Hub domain, rewritten to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of official images on the Hub.
const OFFICIAL_REPO_NAME: &str = "library";
/// Longest repository name (domain and path, excluding tag and digest).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A parsed, normalised reference: `docker.io` is the default domain, single-component paths on
/// docker.io get `library/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`
    pub digest: Option<String>,
}

/// Error text exactly as Go's reference package prints it (e.g. `invalid reference format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceError(pub String);

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReferenceError {}

/// Error texts of the reference and digest packages (as printed by dockerd 20.10).
const ERR_REFERENCE_INVALID_FORMAT: &str = "invalid reference format";
const ERR_NORMALIZED_UPPERCASE: &str =
    "invalid reference format: repository name must be lowercase";
const ERR_NAME_CONTAINS_UPPERCASE: &str = "repository name must be lowercase";
const ERR_NAME_EMPTY: &str = "repository name must have at least one component";
const ERR_DIGEST_INVALID_FORMAT: &str = "invalid checksum digest format";
const ERR_DIGEST_INVALID_LENGTH: &str = "invalid checksum digest length";
const ERR_DIGEST_UNSUPPORTED: &str = "unsupported digest algorithm";

fn err(msg: impl Into<String>) -> ReferenceError {
    ReferenceError(msg.into())
}

// Building blocks of the grammar. `\w` is spelled out: Go's is ASCII-only, Rust's is Unicode.
const ALPHA_NUMERIC: &str = "[a-z0-9]+";
const SEPARATOR: &str = "(?:[._]|__|[-]*)";
const DOMAIN_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const TAG: &str = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";

fn name_component() -> String {
    format!("{ALPHA_NUMERIC}(?:(?:{SEPARATOR}{ALPHA_NUMERIC})+)?")
}

fn domain() -> String {
    format!("{DOMAIN_COMPONENT}(?:(?:[.]{DOMAIN_COMPONENT})+)?(?::[0-9]+)?")
}

/// `name` with an optional domain (no captures).
fn name_pattern() -> String {
    let c = name_component();
    format!("(?:{}/)?{c}(?:(?:/{c})+)?", domain())
}

/// `^(name)(?::(tag))?(?:@(digest))?$`
fn reference_regexp() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!(
            "^({})(?::({TAG}))?(?:@({DIGEST}))?$",
            name_pattern()
        ))
        .expect("reference regexp")
    })
}

/// `^(?:(domain)/)?(path)$`
fn anchored_name_regexp() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let c = name_component();
        Regex::new(&format!("^(?:({})/)?({c}(?:(?:/{c})+)?)$", domain()))
            .expect("anchored name regexp")
    })
}

/// A full 64-hex identifier (refused as a repository name).
fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// go-digest's `DigestRegexpAnchored`: `^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`.
fn is_generic_digest(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new("^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").expect("digest regexp")
    })
    .is_match(s)
}

/// go-digest `Digest.Validate` with the algorithms dockerd registers (sha256, sha384, sha512).
fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let i = match d.find(':') {
        Some(i) if i > 0 && i + 1 < d.len() => i,
        _ => return Err(err(ERR_DIGEST_INVALID_FORMAT)),
    };
    let (algorithm, encoded) = (&d[..i], &d[i + 1..]);
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(err(if is_generic_digest(d) {
                ERR_DIGEST_UNSUPPORTED
            } else {
                ERR_DIGEST_INVALID_FORMAT
            }))
        }
    };
    if encoded.len() != hex_len {
        return Err(err(ERR_DIGEST_INVALID_LENGTH));
    }
    if !encoded
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(err(ERR_DIGEST_INVALID_FORMAT));
    }
    Ok(())
}

/// `splitDockerDomain`: the first component is a domain when it contains `.` or `:` or is
/// `localhost`; `index.docker.io` becomes `docker.io`; single-component Hub paths get `library/`.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i) if name[..i].contains(['.', ':']) || &name[..i] == "localhost" => {
            (name[..i].to_string(), name[i + 1..].to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_NAME}/{remainder}");
    }
    (domain, remainder)
}

/// `reference.Parse`: the un-normalised grammar.
fn parse(s: &str) -> Result<Reference, ReferenceError> {
    let Some(caps) = reference_regexp().captures(s) else {
        if s.is_empty() {
            return Err(err(ERR_NAME_EMPTY));
        }
        if reference_regexp().is_match(&s.to_lowercase()) {
            return Err(err(ERR_NAME_CONTAINS_UPPERCASE));
        }
        return Err(err(ERR_REFERENCE_INVALID_FORMAT));
    };
    let name = caps.get(1).map_or("", |m| m.as_str());
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(err(format!(
            "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )));
    }
    let (domain, path) = match anchored_name_regexp().captures(name) {
        Some(n) => (
            n.get(1).map_or("", |m| m.as_str()).to_string(),
            n.get(2).map_or("", |m| m.as_str()).to_string(),
        ),
        None => (String::new(), name.to_string()),
    };
    let tag = caps
        .get(2)
        .map(|m| m.as_str().to_string())
        .filter(|t| !t.is_empty());
    let digest = match caps.get(3).map(|m| m.as_str()).filter(|d| !d.is_empty()) {
        Some(d) => {
            validate_digest(d)?;
            Some(d.to_string())
        }
        None => None,
    };
    if path.is_empty() {
        return Err(err(ERR_NAME_EMPTY));
    }
    Ok(Reference {
        domain,
        path,
        tag,
        digest,
    })
}

impl Reference {
    /// `reference.ParseNormalizedNamed`.
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        if is_identifier(s) {
            return Err(err(format!(
                "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote_name = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => remainder.as_str(),
        };
        if remote_name.to_lowercase() != remote_name {
            return Err(err(ERR_NORMALIZED_UPPERCASE));
        }
        parse(&format!("{domain}/{remainder}"))
    }

    /// `reference.TagNameOnly`: adds `latest` when there is neither tag nor digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }

    /// `reference.IsNameOnly`: neither tag nor digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// `Named.Name()`: `domain/path` (just `path` when the domain is empty).
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// `reference.FamiliarName`: repository without `docker.io/` and `library/`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.split_once('/') {
            Some((OFFICIAL_REPO_NAME, rest)) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }

    /// `reference.FamiliarString`: familiar name plus `:tag` and `@digest` when present.
    pub fn familiar_string(&self) -> String {
        self.with_suffixes(self.familiar_name())
    }

    /// Fully qualified: `domain/path[:tag][@digest]`.
    pub fn full_string(&self) -> String {
        self.with_suffixes(self.name())
    }

    fn with_suffixes(&self, mut s: String) -> String {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}

impl fmt::Display for Reference {
    /// Go's `String()`: the fully qualified form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn ok(s: &str) -> Reference {
        Reference::parse_normalized(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn fail(s: &str) -> String {
        match Reference::parse_normalized(s) {
            Ok(r) => panic!("{s:?} should fail, parsed as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// `input | domain | path | tag | digest | full string | familiar string`, `-` for none.
    /// `{d}` stands for a sha256 digest, `{hex}` for its 64 hex digits, `{a128}` for 128 `a`s.
    const NORMALISATION: &str = "
        foo | docker.io | library/foo | - | - | docker.io/library/foo | foo
        foo:v1 | docker.io | library/foo | v1 | - | docker.io/library/foo:v1 | foo:v1
        vieux/sshfs | docker.io | vieux/sshfs | - | - | docker.io/vieux/sshfs | vieux/sshfs
        docker.io/vieux/sshfs:latest | docker.io | vieux/sshfs | latest | - | docker.io/vieux/sshfs:latest | vieux/sshfs:latest
        docker.io/foo | docker.io | library/foo | - | - | docker.io/library/foo | foo
        docker.io/library/foo | docker.io | library/foo | - | - | docker.io/library/foo | foo
        library/foo | docker.io | library/foo | - | - | docker.io/library/foo | foo
        # library/ is only dropped for exactly two components
        library/a/b | docker.io | library/a/b | - | - | docker.io/library/a/b | library/a/b
        index.docker.io/foo | docker.io | library/foo | - | - | docker.io/library/foo | foo
        index.docker.io/vieux/sshfs:1 | docker.io | vieux/sshfs | 1 | - | docker.io/vieux/sshfs:1 | vieux/sshfs:1
        localhost:5000/a/b:v1 | localhost:5000 | a/b | v1 | - | localhost:5000/a/b:v1 | localhost:5000/a/b:v1
        127.0.0.1:5000/test/rclone:1 | 127.0.0.1:5000 | test/rclone | 1 | - | 127.0.0.1:5000/test/rclone:1 | 127.0.0.1:5000/test/rclone:1
        localhost/foo | localhost | foo | - | - | localhost/foo | localhost/foo
        # no slash: a bare `localhost` / `localhost:5000` is a Hub name (with a tag)
        localhost | docker.io | library/localhost | - | - | docker.io/library/localhost | localhost
        localhost:5000 | docker.io | library/localhost | 5000 | - | docker.io/library/localhost:5000 | localhost:5000
        foo:5000/bar | foo:5000 | bar | - | - | foo:5000/bar | foo:5000/bar
        Example.com/foo | Example.com | foo | - | - | Example.com/foo | Example.com/foo
        Foo:5000/bar | Foo:5000 | bar | - | - | Foo:5000/bar | Foo:5000/bar
        example.com/docker.io/library/foo | example.com | docker.io/library/foo | - | - | example.com/docker.io/library/foo | example.com/docker.io/library/foo
        # not a valid domain but a valid path: no domain at all (20.10 accepts it)
        a_b.com/foo |  | a_b.com/foo | - | - | a_b.com/foo | a_b.com/foo
        foo/bar.com/baz | docker.io | foo/bar.com/baz | - | - | docker.io/foo/bar.com/baz | foo/bar.com/baz
        # separators
        a.b_c__d-e--f---g | docker.io | library/a.b_c__d-e--f---g | - | - | docker.io/library/a.b_c__d-e--f---g | a.b_c__d-e--f---g
        # tags: upper case and the 128-character limit
        docker.io/library/foo:TAG | docker.io | library/foo | TAG | - | docker.io/library/foo:TAG | foo:TAG
        foo:Tag_1.x-y | docker.io | library/foo | Tag_1.x-y | - | docker.io/library/foo:Tag_1.x-y | foo:Tag_1.x-y
        foo:_x | docker.io | library/foo | _x | - | docker.io/library/foo:_x | foo:_x
        foo:{a128} | docker.io | library/foo | {a128} | - | docker.io/library/foo:{a128} | foo:{a128}
        # digests
        foo@{d} | docker.io | library/foo | - | {d} | docker.io/library/foo@{d} | foo@{d}
        vieux/sshfs:v1@{d} | docker.io | vieux/sshfs | v1 | {d} | docker.io/vieux/sshfs:v1@{d} | vieux/sshfs:v1@{d}
        localhost:5000/x@{d} | localhost:5000 | x | - | {d} | localhost:5000/x@{d} | localhost:5000/x@{d}
        # a digest-looking string without `@` is a name plus tag
        {d} | docker.io | library/sha256 | {hex} | - | docker.io/library/{d} | {d}
        # 64 hex is only refused on its own
        {hex}:tag | docker.io | library/{hex} | tag | - | docker.io/library/{hex}:tag | {hex}:tag
        foo/{hex} | docker.io | foo/{hex} | - | - | docker.io/foo/{hex} | foo/{hex}
    ";

    #[test]
    fn normalisation() {
        let expand = |field: &str| {
            field
                .trim()
                .replace("{d}", &format!("sha256:{HEX64}"))
                .replace("{hex}", HEX64)
                .replace("{a128}", &"a".repeat(128))
        };
        let cases = NORMALISATION
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        for case in cases {
            let fields: Vec<String> = case.split('|').map(expand).collect();
            let [input, domain, path, tag, digest, full, familiar] = &fields[..] else {
                panic!("malformed case {case:?}")
            };
            let optional = |s: &str| (s != "-").then(|| s.to_string());
            let r = ok(input);
            assert_eq!(r.domain, *domain, "{input}");
            assert_eq!(r.path, *path, "{input}");
            assert_eq!(r.tag, optional(tag), "{input}");
            assert_eq!(r.digest, optional(digest), "{input}");
            assert_eq!(r.full_string(), *full, "{input}");
            assert_eq!(r.to_string(), *full, "{input}");
            assert_eq!(r.familiar_string(), *familiar, "{input}");
        }
    }

    #[test]
    fn other_digest_algorithms() {
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        let r = ok(&format!("foo@{sha512}"));
        assert_eq!(r.digest.as_deref(), Some(sha512.as_str()));
        let sha384 = format!("sha384:{}", "0".repeat(96));
        assert_eq!(
            ok(&format!("foo@{sha384}")).digest.as_deref(),
            Some(sha384.as_str())
        );
    }

    #[test]
    fn familiar_name_and_default_tag() {
        assert_eq!(ok("docker.io/library/foo:v1").familiar_name(), "foo");
        assert_eq!(ok("vieux/sshfs:v1").familiar_name(), "vieux/sshfs");
        assert_eq!(
            ok("localhost:5000/x:v2").familiar_name(),
            "localhost:5000/x"
        );
        assert_eq!(ok("foo").name(), "docker.io/library/foo");

        let r = ok("foo").with_default_tag();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.familiar_string(), "foo:latest");
        assert_eq!(r.full_string(), "docker.io/library/foo:latest");
        assert_eq!(
            ok("docker.io/vieux/sshfs")
                .with_default_tag()
                .familiar_string(),
            "vieux/sshfs:latest"
        );
        assert_eq!(
            ok("docker.io/library/x")
                .with_default_tag()
                .familiar_string(),
            "x:latest"
        );
        assert_eq!(
            ok("localhost:5000/a/b")
                .with_default_tag()
                .familiar_string(),
            "localhost:5000/a/b:latest"
        );
        // an existing tag or a digest is left alone
        assert_eq!(ok("foo:v1").with_default_tag().familiar_string(), "foo:v1");
        let d = format!("foo@sha256:{HEX64}");
        let r = ok(&d).with_default_tag();
        assert!(r.tag.is_none());
        assert_eq!(r.familiar_string(), d);
        assert!(ok("foo").is_name_only());
        assert!(!ok("foo:x").is_name_only());
        assert!(!ok(&d).is_name_only());
    }

    #[test]
    fn name_length_limit_counts_the_normalised_name() {
        // docker.io/library/ is 18 characters: 237 + 18 = 255 is the limit.
        ok(&"a".repeat(237));
        ok(&format!("x/{}", "a".repeat(243)));
        let too_long = "repository name must not be more than 255 characters";
        assert_eq!(fail(&"a".repeat(238)), too_long);
        assert_eq!(fail(&format!("x/{}", "a".repeat(244))), too_long);
        // the tag does not count
        ok(&format!("{}:{}", "a".repeat(237), "t".repeat(128)));
        // checked after the grammar, before the digest
        assert_eq!(
            fail(&format!("{}@sha256:abc", "a".repeat(300))),
            "invalid reference format"
        );
        assert_eq!(
            fail(&format!("{}@md5:{}", "a".repeat(300), "0".repeat(32))),
            too_long
        );
        // upper case is reported first
        assert_eq!(
            fail(&"A".repeat(300)),
            "invalid reference format: repository name must be lowercase"
        );
    }

    /// Every message below was confirmed against dockerd 20.10 (`POST /plugins/create?name=`).
    #[test]
    fn errors() {
        let invalid = "invalid reference format";
        let lower = "invalid reference format: repository name must be lowercase";
        let cases: Vec<(String, String)> = vec![
            ("".into(), invalid.into()),
            ("a:b:c".into(), invalid.into()),
            ("foo:tag:tag2".into(), invalid.into()),
            ("Foo/bar".into(), lower.into()),
            ("A".into(), lower.into()),
            ("É".into(), lower.into()),
            ("é".into(), invalid.into()),
            ("LOCALHOST/foo".into(), lower.into()),
            ("localhost/Foo".into(), lower.into()),
            ("example.com/Foo".into(), lower.into()),
            ("foo.com/bar/Baz:tag".into(), lower.into()),
            ("foo/BAR:tag".into(), lower.into()),
            (format!("ABCDEF{}", &HEX64[6..]), lower.into()),
            (format!("foo@SHA256:{HEX64}"), lower.into()),
            (format!("foo@Sha256:{}", &HEX64[..32]), lower.into()),
            (
                HEX64.into(),
                format!(
                    "invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings"
                ),
            ),
            (
                "a".repeat(64),
                format!(
                    "invalid repository name ({}), cannot specify 64-byte hexadecimal strings",
                    "a".repeat(64)
                ),
            ),
            ("[::1]:5000/foo".into(), invalid.into()),
            ("foo.com:abc/bar".into(), invalid.into()),
            ("-foo.com/bar".into(), invalid.into()),
            ("foo-.com/bar".into(), invalid.into()),
            ("a_b:1/c".into(), invalid.into()),
            ("a..b".into(), invalid.into()),
            ("a___b".into(), invalid.into()),
            ("a.-b".into(), invalid.into()),
            ("a-.b".into(), invalid.into()),
            ("a._b".into(), invalid.into()),
            ("a-_b".into(), invalid.into()),
            ("a-".into(), invalid.into()),
            ("-a".into(), invalid.into()),
            ("a/".into(), invalid.into()),
            ("/a".into(), invalid.into()),
            ("a//b".into(), invalid.into()),
            ("foo bar".into(), invalid.into()),
            ("foo:".into(), invalid.into()),
            ("foo:.bad".into(), invalid.into()),
            ("foo:-bad".into(), invalid.into()),
            (format!("foo:{}", "a".repeat(129)), invalid.into()),
            ("foo@".into(), invalid.into()),
            ("foo@sha256".into(), invalid.into()),
            ("foo@sha256:abc".into(), invalid.into()),
            (format!("@sha256:{HEX64}"), invalid.into()),
            (format!("foo@sha256:{HEX64}:x"), invalid.into()),
            (
                format!("foo@sha256:ABCDEF{}", &HEX64[6..]),
                "invalid checksum digest format".into(),
            ),
            (
                format!("foo@sha256:{}", &HEX64[..32]),
                "invalid checksum digest length".into(),
            ),
            (
                format!("foo@sha512:{}", &HEX64[..32]),
                "invalid checksum digest length".into(),
            ),
            (
                format!("foo@md5:{}", &HEX64[..32]),
                "unsupported digest algorithm".into(),
            ),
            (
                format!("foo@sha256+b64:{}", &HEX64[..32]),
                "unsupported digest algorithm".into(),
            ),
            // passes the reference grammar but not go-digest's algorithm grammar
            (format!("foo@A.b:{}", &HEX64[..32]), lower.into()),
            (
                format!("foo:t@Ab:{}", &HEX64[..32]),
                "invalid checksum digest format".into(),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(fail(&input), want, "input {input:?}");
        }
    }

    #[test]
    fn digest_validation() {
        assert!(validate_digest(&format!("sha256:{HEX64}")).is_ok());
        for (digest, want) in [
            ("sha256:", ERR_DIGEST_INVALID_FORMAT),
            (":abc", ERR_DIGEST_INVALID_FORMAT),
            ("nocolon", ERR_DIGEST_INVALID_FORMAT),
            ("foo_bar:abc", ERR_DIGEST_UNSUPPORTED),
            ("Foo:abc", ERR_DIGEST_INVALID_FORMAT),
        ] {
            assert_eq!(validate_digest(digest).unwrap_err().0, want, "{digest}");
        }
    }

    #[test]
    fn parse_without_normalisation() {
        // `reference.Parse` keeps what it is given; used by ParseNormalizedNamed after splitting.
        assert_eq!(parse("").unwrap_err().0, ERR_NAME_EMPTY);
        assert_eq!(parse("Foo").unwrap_err().0, ERR_NAME_CONTAINS_UPPERCASE);
        let r = parse("foo").unwrap();
        assert_eq!((r.domain.as_str(), r.path.as_str()), ("", "foo"));
        let r = parse("a.b/c").unwrap();
        assert_eq!((r.domain.as_str(), r.path.as_str()), ("a.b", "c"));
    }
}
