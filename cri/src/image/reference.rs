//! Image names, normalised as the kubelet and containerd do (docker's reference grammar):
//! `busybox` → `docker.io/library/busybox:latest`, `localhost:5000/x` →
//! `localhost:5000/x:latest`, `name@sha256:<hex>` kept as a digest reference. A reference
//! with both a tag and a digest keeps only the digest, as containerd's `ParseDockerRef` does.

use std::fmt;

use super::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given; `None` with a digest.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")
        } else if let Some(tag) = &self.tag {
            write!(f, ":{tag}")
        } else {
            Ok(())
        }
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// Normalises `name` into its fully qualified form (see the module documentation).
pub fn normalize_reference(name: &str) -> Result<String, ImageError> {
    Ok(parse_reference(name)?.to_string())
}

/// Parses and normalises `name`.
pub fn parse_reference(name: &str) -> Result<Reference, ImageError> {
    if name.is_empty() {
        return Err(invalid(name, "empty"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(digest).map_err(|r| invalid(name, r))?;
            (rest, Some(digest.to_string()))
        }
        None => (name, None),
    };
    let (repo, tag) = match rest.rfind(':') {
        // A ':' before the last '/' is a registry port.
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(tag).map_err(|r| invalid(name, r))?;
    }
    if repo.is_empty() {
        return Err(invalid(name, "empty repository name"));
    }
    if repo.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(invalid(
            name,
            format!("repository name longer than {NAME_TOTAL_LENGTH_MAX} characters"),
        ));
    }
    let (domain, path) = match repo.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, path.to_string())
        }
        _ => {
            if repo.len() == 64 && repo.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    name,
                    "a 64-character hexadecimal string is an image id, not a repository name",
                ));
            }
            (DEFAULT_DOMAIN, repo.to_string())
        }
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    validate_domain(domain).map_err(|r| invalid(name, r))?;
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path
    };
    validate_path(&path).map_err(|r| invalid(name, r))?;
    let tag = match (&digest, tag) {
        (Some(_), _) => None,
        (None, Some(t)) => Some(t.to_string()),
        (None, None) => Some(DEFAULT_TAG.to_string()),
    };
    Ok(Reference {
        repository: format!("{domain}/{path}"),
        tag,
        digest,
    })
}

/// `sha256:` followed by 64 lowercase hex digits: the only algorithm the store computes.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!("digest {digest:?} is not sha256:<hex>"));
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} does not have 64 lowercase hex digits"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        None => Err("empty tag".into()),
        Some(&first) if !word(first) => Err(format!("tag {tag:?} must start with [A-Za-z0-9_]")),
        _ if bytes.len() > 128 => Err(format!("tag {tag:?} is longer than 128 characters")),
        _ if !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') => {
            Err(format!("tag {tag:?} may only hold [A-Za-z0-9_.-]"))
        }
        _ => Ok(()),
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // An IPv6 literal: [addr] or [addr]:port.
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("registry {domain:?}: unterminated IPv6 address"));
        };
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!("registry {domain:?}: bad IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry {domain:?}: junk after the IPv6 address")),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-';
            if !ok {
                return Err(format!("registry {domain:?}: bad host name"));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {domain:?}: bad port"));
        }
    }
    Ok(())
}

/// Path components: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        let b = component.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() {
            return Err(format!("repository path {path:?} has an empty component"));
        }
        if b.iter().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("repository name {path:?} must be lowercase"));
        }
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(format!(
                "repository path component {component:?} must start and end with [a-z0-9]"
            ));
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator: '.', '_', '__' or a run of '-', then an alphanumeric.
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(format!(
                    "repository path component {component:?}: bad separator {sep:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_the_kubelet() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_string()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/library/busybox:x",
                "docker.io/library/busybox:x".into(),
            ),
            ("user/app:v1", "docker.io/user/app:v1".into()),
            ("localhost:5000/x", "localhost:5000/x:latest".into()),
            ("localhost/x:1", "localhost/x:1".into()),
            (
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io/pause:3.9".into(),
            ),
            ("quay.io/a/b/c", "quay.io/a/b/c:latest".into()),
            ("[::1]:5000/x:t", "[::1]:5000/x:t".into()),
            ("Example.com/x", "Example.com/x:latest".into()),
            (
                "a__b-c---d/e.f_g",
                "docker.io/a__b-c---d/e.f_g:latest".into(),
            ),
            (
                &format!("busybox@{D}")[..],
                format!("docker.io/library/busybox@{D}"),
            ),
            (
                &format!("busybox:1.36@{D}")[..],
                format!("docker.io/library/busybox@{D}"),
            ),
            (
                &format!("localhost:5000/x@{D}")[..],
                format!("localhost:5000/x@{D}"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn parts() {
        let r = parse_reference("localhost:5000/a/b:v2").unwrap();
        assert_eq!(r.repository, "localhost:5000/a/b");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.digest, None);
        let r = parse_reference(&format!("x@{D}")).unwrap();
        assert_eq!(r.repository, "docker.io/library/x");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            ":tag",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/b/",
            "-a",
            "a..b",
            "a.-b",
            "bad host!/x",
            "host:port/x",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            &"a".repeat(300),
            &format!("busybox:{}", "t".repeat(129)),
        ] {
            let err = normalize_reference(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid image reference"), "{err}");
        }
    }
}
