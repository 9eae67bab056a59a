//! `cri_pull`: PullImage from a real registry (Debian's `docker-registry` on 127.0.0.1,
//! filled by `skopeo` from OCI layouts of `rootfs_fixtures`): by tag and by digest, then a
//! container runs from the pulled image; a multi-platform index; gzip, zstd and plain
//! layers; layers with whiteouts; an htpasswd-protected registry with right, wrong and
//! missing credentials; two pulls of one image at once (one download each blob, counted in
//! the registry's access log); a corrupt blob (in the registry, and damaged on the way by
//! a proxy); a full disk under the store (a small tmpfs); RemoveImage back to an empty store;
//! hosts.toml's `ca`, `skip_verify`, mirrors, `client` certificates (a registry with
//! `http.tls.clientcas`) and API paths (`http.prefix`, `override_path`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use integration_tests::cri::*;
use integration_tests::registry::{tools_present, Registry, RegistryOptions};
use integration_tests::registry_fakes::{BlobFault, BlobProxy, TokenAccount, TokenService};
use rootfs_fixtures::image::{digest_of, go_arch};

const T30: Duration = Duration::from_secs(30);

fn marker_image(marker: &str, compression: Compression) -> FixtureImage {
    FixtureImage {
        compression,
        extra_layers: vec![LayerSpec {
            files: vec![("etc/marker".into(), marker.as_bytes().to_vec(), 0o644)],
            ..Default::default()
        }],
        ..FixtureImage::default()
    }
}

async fn pull(s: &CriServer, image: &str, auth: Option<api::AuthConfig>) -> Result<String, Status> {
    s.images()
        .pull_image(api::PullImageRequest {
            image: Some(image_spec(image)),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(s: &CriServer, image: &str) -> api::ImageStatusResponse {
    s.images()
        .image_status(api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {}", show(&e)))
        .into_inner()
}

async fn list(s: &CriServer) -> Vec<api::Image> {
    s.images()
        .list_images(api::ListImagesRequest { filter: None })
        .await
        .unwrap_or_else(|e| panic!("ListImages: {}", show(&e)))
        .into_inner()
        .images
}

/// Runs `script` in a container of `image` in a new pod; returns its log lines.
async fn run_in(s: &CriServer, pod_name: &str, image: &str, script: &str) -> Vec<String> {
    let pod = s.pod_config(pod_name);
    let pod_id = s.run_pod(&pod).await;
    let cfg = s.container_config("c", image, &["sh", "-c", &format!("{script}; echo done")]);
    let c = s.run_container(&pod_id, &pod, &cfg).await;
    let st = s.wait_exited(&c).await;
    assert_eq!(st.exit_code, 0, "{image}: {st:?}");
    let log = wait_log_line(&CriServer::log_path(&pod, &cfg), "done", T30).await;
    s.stop_and_remove_pod(&pod_id).await;
    log.into_iter().map(|l| l.text).collect()
}

/// Files of the store's directories that hold content (empty after everything is removed).
fn store_entries(s: &CriServer) -> Vec<String> {
    let root = s.root().join("images");
    let mut out = Vec::new();
    for d in ["blobs/sha256", "layers", "images", "tmp"] {
        if let Ok(rd) = fs::read_dir(root.join(d)) {
            for e in rd.flatten() {
                out.push(format!("{d}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

#[tokio::test]
async fn pull_by_tag_and_digest_then_run() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pulltag").await;
    let w = reg.push(
        &marker_image("from-the-registry", Compression::Gzip),
        "rrun/app:1",
    );
    let name = format!("{}/rrun/app:1", reg.host());
    assert!(list(&s).await.is_empty(), "the store starts empty");

    let id = pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id, "image_ref is the image id (the config's digest)");
    let st = status(&s, &name).await;
    let img = st.image.expect("ImageStatus after the pull");
    assert_eq!(img.id, w.id);
    assert_eq!(img.repo_tags, vec![name.clone()]);
    let by_digest = format!("{}/rrun/app@{}", reg.host(), w.manifest_digest);
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);
    assert_eq!(img.size, w.size, "size: the config and layer blobs");
    let info = st.info.get("info").expect("verbose info");
    assert!(
        info.contains("\"rootfs\"") && info.contains(&w.diff_ids[0]),
        "{info}"
    );

    // A container of the pulled image sees its top layer.
    let log = run_in(&s, "p1", &name, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "from-the-registry"), "{log:?}");

    // Again by digest: the same image, and not one blob downloaded again.
    let gets: Vec<usize> = w
        .layer_digests
        .iter()
        .map(|d| reg.blob_gets("rrun/app", d))
        .collect();
    assert!(gets.iter().all(|n| *n == 1), "one GET per layer: {gets:?}");
    let id2 = pull(&s, &by_digest, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id2, w.id);
    for d in &w.layer_digests {
        assert_eq!(reg.blob_gets("rrun/app", d), 1, "blob {d} fetched again");
    }
    let st = status(&s, &by_digest).await;
    assert_eq!(st.image.map(|i| i.id), Some(w.id.clone()));
    let log = run_in(&s, "p2", &by_digest, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "from-the-registry"), "{log:?}");

    // A tag the registry does not have: NotFound, naming the image.
    let missing = format!("{}/rrun/app:nope", reg.host());
    let e = expect_code(
        pull(&s, &missing, None).await,
        Code::NotFound,
        "missing tag",
    );
    assert!(e.message().contains("rrun/app:nope"), "{}", show(&e));
    assert_eq!(list(&s).await.len(), 1);

    // RemoveImage, then the store holds nothing.
    s.images()
        .remove_image(api::RemoveImageRequest {
            image: Some(image_spec(&name)),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage: {}", show(&e)));
    assert!(list(&s).await.is_empty());
    assert_eq!(
        store_entries(&s),
        Vec::<String>::new(),
        "the store after RemoveImage"
    );
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn gzip_zstd_and_plain_layers() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pullcomp").await;
    for (n, c) in [Compression::Gzip, Compression::Zstd, Compression::None]
        .into_iter()
        .enumerate()
    {
        let marker = format!("{c:?}-layers");
        let w = reg.push(&marker_image(&marker, c), &format!("rrun/comp:{n}"));
        let name = format!("{}/rrun/comp:{n}", reg.host());
        let id = pull(&s, &name, None)
            .await
            .unwrap_or_else(|e| panic!("{marker}: {}", show(&e)));
        assert_eq!(id, w.id, "{marker}");
        let log = run_in(&s, &format!("p{n}"), &name, "cat /etc/marker; echo").await;
        assert!(log.contains(&marker), "{marker}: {log:?}");
    }
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn layers_with_whiteouts_run() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pullwh").await;
    let spec = FixtureImage {
        extra_layers: vec![
            LayerSpec {
                files: vec![
                    ("data/gone".into(), b"x".to_vec(), 0o644),
                    ("data/kept".into(), b"kept".to_vec(), 0o644),
                    ("opaque/old".into(), b"old".to_vec(), 0o644),
                ],
                ..Default::default()
            },
            LayerSpec {
                files: vec![("opaque/new".into(), b"new".to_vec(), 0o644)],
                whiteouts: vec!["data/gone".into()],
                opaque_dirs: vec!["opaque".into()],
            },
        ],
        ..FixtureImage::default()
    };
    let w = reg.push(&spec, "rrun/wh:1");
    assert_eq!(w.layer_digests.len(), 3);
    let name = format!("{}/rrun/wh:1", reg.host());
    pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    let log = run_in(&s, "p", &name, "ls /data /opaque | tr '\\n' ' '; echo").await;
    let line = log.first().cloned().unwrap_or_default();
    assert!(
        line.contains("kept")
            && line.contains("new")
            && !line.contains("gone")
            && !line.contains("old"),
        "whiteouts in the pulled image: {log:?}"
    );
    assert_no_leftovers(&s);
}

/// An index with an arm64 manifest listed first and this machine's second: the pull takes
/// this machine's, as containerd does; repo_digests names the index.
#[tokio::test]
async fn multi_platform_index() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pullidx").await;
    let layout = reg.layout_dir();
    let mut other = marker_image("other-platform", Compression::Gzip);
    other.reference = "other".into();
    let mut mine = marker_image("this-platform", Compression::Gzip);
    mine.reference = "mine".into();
    let written = write_images(&layout, ArchiveFormat::OciLayoutDir, &[other, mine])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let size_of = |digest: &str| {
        fs::metadata(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .expect("manifest blob")
        .len()
    };
    let foreign_arch = if go_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let entry = |w: &rootfs_fixtures::image::WrittenImage, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": w.manifest_digest,
            "size": size_of(&w.manifest_digest),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(&written[0], foreign_arch),
            entry(&written[1], go_arch()),
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": written[0].manifest_digest,
                "size": size_of(&written[0].manifest_digest),
                "platform": {"os": "unknown", "architecture": "unknown"},
            },
        ],
    });
    let bytes = serde_json::to_vec(&index).expect("index json");
    let index_digest = digest_of(&bytes);
    fs::write(
        layout
            .join("blobs/sha256")
            .join(index_digest.trim_start_matches("sha256:")),
        &bytes,
    )
    .expect("writing the index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&top).expect("json"),
    )
    .expect("index.json");
    reg.push_layout(&layout, "multi", "rrun/multi:1", true);

    let name = format!("{}/rrun/multi:1", reg.host());
    let id = pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, written[1].id, "this machine's image");
    let img = status(&s, &name).await.image.expect("pulled");
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/rrun/multi@{index_digest}", reg.host())],
        "repo_digests names the index"
    );
    let log = run_in(&s, "p", &name, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "this-platform"), "{log:?}");
    // The other platform's layer was never fetched.
    let other_top = written[0].layer_digests.last().expect("layers");
    assert_eq!(reg.blob_gets("rrun/multi", other_top), 0);
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn htpasswd_registry_right_wrong_and_missing_credentials() {
    if !tools_present() {
        return;
    }
    let password = "s3cret-Pa55-rrun";
    let reg = Registry::start(RegistryOptions {
        credentials: Some(("tester".into(), password.into())),
        ..Default::default()
    });
    let s = CriServer::start("pullauth").await;
    let w = reg.push(
        &marker_image("private", Compression::Gzip),
        "rrun/private:1",
    );
    let name = format!("{}/rrun/private:1", reg.host());

    let e = expect_code(
        pull(&s, &name, None).await,
        Code::Unauthenticated,
        "no credentials",
    );
    assert!(e.message().contains("rrun/private"), "{}", show(&e));
    let wrong = api::AuthConfig {
        username: "tester".into(),
        password: "wrong-password".into(),
        ..Default::default()
    };
    expect_code(
        pull(&s, &name, Some(wrong)).await,
        Code::Unauthenticated,
        "wrong password",
    );
    assert!(list(&s).await.is_empty(), "nothing kept from failed pulls");

    let right = api::AuthConfig {
        username: "tester".into(),
        password: password.into(),
        ..Default::default()
    };
    let id = pull(&s, &name, Some(right))
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    // The same credentials as docker's base64 `auth`.
    use std::io::Write;
    let mut b64 = Vec::new();
    {
        let out = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("base64");
        let mut child = out;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("tester:{password}").as_bytes())
            .expect("write");
        b64.extend(child.wait_with_output().expect("base64").stdout);
    }
    let auth = api::AuthConfig {
        auth: String::from_utf8(b64).expect("utf8"),
        ..Default::default()
    };
    let by_digest = format!("{}/rrun/private@{}", reg.host(), w.manifest_digest);
    assert_eq!(
        pull(&s, &by_digest, Some(auth))
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e))),
        w.id
    );
    let log = run_in(&s, "p", &name, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "private"), "{log:?}");
    let server_log = s.stderr();
    assert!(
        !server_log.contains(password),
        "the password in the server's log"
    );
    assert!(
        !server_log.contains("wrong-password"),
        "a password in the server's log"
    );
    assert_no_leftovers(&s);
}

/// A token service and a registry in token mode (`auth: token:`) that trusts it.
fn token_registry(dir: &Path) -> (TokenAccount, TokenService, Registry) {
    let account = TokenAccount {
        user: "tester".into(),
        password: "t0ken-Pa55-rrun".into(),
        refresh_token: "refresh-7f3a9c-rrun".into(),
    };
    let tokens = TokenService::start(dir, account.clone());
    let reg = Registry::start(RegistryOptions {
        credentials: Some((account.user.clone(), account.password.clone())),
        token: Some((tokens.realm(), tokens.cert().to_path_buf())),
        ..Default::default()
    });
    (account, tokens, reg)
}

/// A registry in token mode (`auth: token:`) with the test's token service: the bearer
/// flow with right, wrong and missing credentials, each answer quoting the service or the
/// registry, and no secret in an answer or the server's log.
#[tokio::test]
async fn token_registry_right_wrong_and_missing_credentials() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (account, tokens, reg) = token_registry(dir.path());
    let s = CriServer::start("pulltoken").await;
    let w = reg.push(&marker_image("tokened", Compression::Gzip), "rrun/tok:1");
    let name = format!("{}/rrun/tok:1", reg.host());

    // Anonymous: the service gives a token without access, which the registry refuses.
    let e = expect_code(
        pull(&s, &name, None).await,
        Code::Unauthenticated,
        "anonymous",
    );
    assert!(e.message().contains("rrun/tok"), "{}", show(&e));
    assert!(
        e.message()
            .contains("the registry says: authentication required"),
        "the registry's own words: {}",
        show(&e)
    );
    let wrong = api::AuthConfig {
        username: account.user.clone(),
        password: "wrong-t0ken-pass".into(),
        ..Default::default()
    };
    let e = expect_code(
        pull(&s, &name, Some(wrong)).await,
        Code::Unauthenticated,
        "wrong password",
    );
    assert!(
        e.message()
            .contains("test token service: invalid credentials"),
        "the token service's own words: {}",
        show(&e)
    );
    assert!(!e.message().contains("wrong-t0ken-pass"), "{}", show(&e));
    assert!(list(&s).await.is_empty(), "nothing kept from failed pulls");

    let right = api::AuthConfig {
        username: account.user.clone(),
        password: account.password.clone(),
        ..Default::default()
    };
    let id = pull(&s, &name, Some(right))
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert!(
        tokens.requests().iter().any(|r| r == "GET basic ok"),
        "{:?}",
        tokens.requests()
    );
    let log = run_in(&s, "p", &name, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "tokened"), "{log:?}");
    let server_log = s.stderr();
    for secret in [&account.password, "wrong-t0ken-pass"] {
        assert!(!server_log.contains(secret), "a secret in the server's log");
    }
    assert_no_leftovers(&s);
}

/// `identity_token`: the OAuth2 refresh-token grant (POST) at the token realm, the GET
/// fallback where the service answers POST with 405, a wrong token refused with the
/// service's message, and the token never in an answer or the server's log.
#[tokio::test]
async fn identity_token_refresh_grant_and_get_fallback() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (account, tokens, reg) = token_registry(dir.path());
    let s = CriServer::start("pullidtoken").await;
    let w = reg.push(&marker_image("identity", Compression::Gzip), "rrun/idt:1");
    let name = format!("{}/rrun/idt:1", reg.host());
    let with_token = |t: &str| api::AuthConfig {
        identity_token: t.into(),
        ..Default::default()
    };

    let e = expect_code(
        pull(&s, &name, Some(with_token("refresh-wrong-4242"))).await,
        Code::Unauthenticated,
        "wrong identity token",
    );
    assert!(
        e.message().contains("test token service"),
        "the token service's own words: {}",
        show(&e)
    );
    assert!(!e.message().contains("refresh-wrong-4242"), "{}", show(&e));
    assert!(list(&s).await.is_empty());

    let before = tokens.requests().len();
    let id = pull(&s, &name, Some(with_token(&account.refresh_token)))
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    let made: Vec<String> = tokens.requests()[before..].to_vec();
    assert_eq!(made, ["POST refresh_token ok"], "one refresh-token grant");

    // A service without the OAuth2 endpoint: the refresh token as a basic-auth password.
    tokens.set_post_supported(false);
    let by_digest = format!("{}/rrun/idt@{}", reg.host(), w.manifest_digest);
    let before = tokens.requests().len();
    let id = pull(&s, &by_digest, Some(with_token(&account.refresh_token)))
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    let made: Vec<String> = tokens.requests()[before..].to_vec();
    assert_eq!(made, ["POST unsupported", "GET basic ok"]);

    let server_log = s.stderr();
    for secret in [&account.refresh_token, "refresh-wrong-4242"] {
        assert!(!server_log.contains(secret), "a secret in the server's log");
    }
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn two_concurrent_pulls_download_once() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pulltwo").await;
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let spec = FixtureImage {
        extra_layers: vec![LayerSpec {
            files: vec![("big".into(), big, 0o644)],
            ..Default::default()
        }],
        ..FixtureImage::default()
    };
    let w = reg.push(&spec, "rrun/two:1");
    let name = format!("{}/rrun/two:1", reg.host());
    let (a, b) = tokio::join!(pull(&s, &name, None), pull(&s, &name, None));
    let a = a.unwrap_or_else(|e| panic!("{}", show(&e)));
    let b = b.unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!((a.as_str(), b.as_str()), (w.id.as_str(), w.id.as_str()));
    for d in &w.layer_digests {
        assert_eq!(reg.blob_gets("rrun/two", d), 1, "blob {d}: downloaded once");
    }
    assert_eq!(
        reg.blob_gets("rrun/two", &w.id),
        1,
        "the config: downloaded once"
    );
    assert_eq!(list(&s).await.len(), 1);
    assert_no_leftovers(&s);
}

/// The registry serves a layer whose bytes do not match its digest: the pull fails with
/// DATA_LOSS naming the blob, and the store keeps nothing of it.
#[tokio::test]
async fn corrupt_blob_fails_and_leaves_nothing() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pullbad").await;
    let w = reg.push(&marker_image("corrupt", Compression::Gzip), "rrun/bad:1");
    let top = w.layer_digests.last().expect("layers").clone();
    flip_last_byte(&reg.blob_file(&top));
    let name = format!("{}/rrun/bad:1", reg.host());
    let e = expect_code(pull(&s, &name, None).await, Code::DataLoss, "corrupt blob");
    assert!(
        e.message().contains(&top),
        "the error names the blob: {}",
        show(&e)
    );
    assert!(list(&s).await.is_empty());
    assert_eq!(
        store_entries(&s),
        Vec::<String>::new(),
        "the store after a failed pull"
    );
    assert_no_leftovers(&s);
}

/// A blob damaged on its way (a proxy flips a byte in the middle of the registry's answer):
/// the pull fails with DATA_LOSS naming the blob and the digest mismatch, nothing of it is
/// stored or staged, and the same image straight from the registry then pulls whole.
#[tokio::test]
async fn a_blob_corrupted_on_the_way_is_refused() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pullmangled").await;
    let w = reg.push(
        &marker_image("mangled", Compression::Gzip),
        "rrun/mangled:1",
    );
    let top = w.layer_digests.last().expect("layers").clone();
    let proxy = BlobProxy::start(reg.host(), &top, BlobFault::FlipMiddleByte);
    let via_proxy = format!("{}/rrun/mangled:1", proxy.host());
    let e = expect_code(
        pull(&s, &via_proxy, None).await,
        Code::DataLoss,
        "a blob damaged on the way",
    );
    assert!(proxy.faulted() >= 1, "the proxy damaged the blob");
    assert!(
        e.message().contains(&top) && e.message().contains("digest mismatch"),
        "the error names the blob and the mismatch: {}",
        show(&e)
    );
    assert!(list(&s).await.is_empty());
    assert_eq!(
        store_entries(&s),
        Vec::<String>::new(),
        "the store after a failed pull"
    );
    let direct = format!("{}/rrun/mangled:1", reg.host());
    let id = pull(&s, &direct, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert_no_leftovers(&s);
}

/// The files of the store's content dirs under `images`, as a process sees them through
/// `/proc/PID/root` (the server's own mount namespace).
fn store_entries_of(pid: i32, root: &Path) -> Vec<String> {
    let images = Path::new(&format!("/proc/{pid}/root")).join(
        root.join("images")
            .strip_prefix("/")
            .expect("an absolute root"),
    );
    let mut out = Vec::new();
    for d in ["blobs/sha256", "layers", "images", "tmp"] {
        if let Ok(rd) = fs::read_dir(images.join(d)) {
            for e in rd.flatten() {
                out.push(format!("{d}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// A full disk under the store: the server runs in a private mount namespace with a 16 MiB
/// tmpfs as its image store. A layer whose download fills it, and a small layer whose
/// unpacked files fill it, each fail the pull with RESOURCE_EXHAUSTED naming the full
/// filesystem; nothing of them stays, and a small image then pulls into the space they gave
/// back.
#[tokio::test]
async fn a_full_disk_fails_the_pull_cleanly() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    // The server's command line names its root: the tmpfs goes on `<root>/images`, in a
    // mount namespace of the server's own (gone with it: nothing to unmount).
    let script = r#"for a; do [ "$prev" = --root ] && root=$a; prev=$a; done
mkdir -p "$root/images" && mount -t tmpfs -o size=16m,mode=0700 rrun-test-images "$root/images" && exec "$@""#;
    let s = CriServer::start_with(
        "pullfull",
        StartOptions {
            wrap: ["unshare", "--mount", "--propagation", "private", "--"]
                .into_iter()
                .chain(["sh", "-c", script, "sh"])
                .map(String::from)
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let pid = s.server_pid().expect("the server runs");
    let mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let images = s.root().join("images");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" tmpfs rrun-test-images ")
                && l.contains(&format!(" {} ", images.display()))),
        "the store is on the test's tmpfs:\n{mounts}"
    );

    // A download bigger than the disk (24 MiB, stored uncompressed), and a 48 MiB layer
    // of zeros that downloads as a few KiB of gzip and fills the disk when unpacked.
    let noise: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let zeros = vec![0u8; 48 << 20];
    for (tag, data, compression) in [
        ("download", noise, Compression::None),
        ("unpack", zeros, Compression::Gzip),
    ] {
        let spec = FixtureImage {
            compression,
            extra_layers: vec![LayerSpec {
                files: vec![("big".into(), data, 0o644)],
                ..Default::default()
            }],
            ..FixtureImage::default()
        };
        reg.push(&spec, &format!("rrun/full:{tag}"));
        let name = format!("{}/rrun/full:{tag}", reg.host());
        let e = expect_code(
            pull(&s, &name, None).await,
            Code::ResourceExhausted,
            &format!("a pull that fills the disk ({tag})"),
        );
        let m = e.message();
        assert!(
            m.contains(&format!(
                "no space left on the image filesystem {} (tmpfs rrun-test-images, 16.0 MiB)",
                images.display()
            )),
            "{tag}: the error names the full disk: {}",
            show(&e)
        );
        assert!(list(&s).await.is_empty(), "{tag}: no image");
        assert_eq!(
            store_entries_of(pid, s.root()),
            Vec::<String>::new(),
            "{tag}: nothing of the failed pull stays on the disk"
        );
    }

    // The space came back: a small image fits.
    let w = reg.push(&marker_image("fits", Compression::Gzip), "rrun/full:small");
    let id = pull(&s, &format!("{}/rrun/full:small", reg.host()), None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert_no_leftovers(&s);
}

fn flip_last_byte(path: &Path) {
    let mut data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let last = data.last_mut().expect("a non-empty blob");
    *last ^= 0xff;
    fs::write(path, data).expect("writing the corrupted blob");
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI in `dir`:
/// (ca.crt, server.crt, server.key).
fn make_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=rrun-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

fn write_hosts(dir: &Path, host: &str, text: &str) {
    let d = dir.join(host);
    fs::create_dir_all(&d).expect("hosts dir");
    fs::write(d.join("hosts.toml"), text).expect("hosts.toml");
}

/// A TLS registry with a CA the test made, reached through `hosts.toml`: mirrors tried in
/// order (one refusing connections, one without the image) before the upstream, a mirror
/// that has the image serving it, and the upstream refused without the CA, then taken with
/// `skip_verify`.
#[tokio::test]
async fn tls_registry_and_hosts_toml_mirrors() {
    if !tools_present() {
        return;
    }
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_ca(pki.path());
    let upstream = Registry::start(RegistryOptions {
        tls: Some((cert, key)),
        ..Default::default()
    });
    let mirror = Registry::start(RegistryOptions::default());
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let certs = pki.path().join("certs.d");
    write_hosts(
        &certs,
        &upstream.host(),
        &format!(
            "server = \"https://{up}\"\nca = \"{ca}\"\n\
             [host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            up = upstream.host(),
            ca = ca.display(),
            mirror = mirror.host(),
        ),
    );
    let s = CriServer::start_with(
        "pulltls",
        StartOptions {
            config_toml: Some(format!(
                "[registry]\nconfig_path = \"{}\"\n",
                certs.display()
            )),
            ..Default::default()
        },
    )
    .await;

    // Only the upstream has it: both mirrors fail over to it.
    let w = upstream.push(&marker_image("over-tls", Compression::Gzip), "rrun/tls:1");
    let name = format!("{}/rrun/tls:1", upstream.host());
    let id = pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert!(
        mirror.log_text().contains("\"GET /v2/rrun/tls/manifests/1"),
        "the mirror was asked first:\n{}",
        mirror.log_text()
    );
    let log = run_in(&s, "p", &name, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "over-tls"), "{log:?}");

    // The mirror has this one: it serves every blob, the upstream none.
    let spec = marker_image("from-the-mirror", Compression::Zstd);
    let w2 = mirror.push(&spec, "rrun/tls:2");
    upstream.push(&spec, "rrun/tls:2");
    let name2 = format!("{}/rrun/tls:2", upstream.host());
    let id2 = pull(&s, &name2, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id2, w2.id);
    let top = w2.layer_digests.last().expect("layers");
    assert_eq!(mirror.blob_gets("rrun/tls", top), 1);
    assert_eq!(upstream.blob_gets("rrun/tls", top), 0);

    // Without the CA, the upstream's certificate is refused, and said so.
    let untrusted = pki.path().join("untrusted.d");
    write_hosts(
        &untrusted,
        &upstream.host(),
        &format!("server = \"https://{}\"\n", upstream.host()),
    );
    let s2 = CriServer::start_with(
        "pullnoca",
        StartOptions {
            config_toml: Some(format!(
                "[registry]\nconfig_path = \"{}\"\n",
                untrusted.display()
            )),
            ..Default::default()
        },
    )
    .await;
    let e = expect_code(
        pull(&s2, &name, None).await,
        Code::Unavailable,
        "untrusted CA",
    );
    assert!(
        e.message().to_lowercase().contains("certificate"),
        "{}",
        show(&e)
    );
    assert!(list(&s2).await.is_empty());
    // With `skip_verify`, the certificate is not checked.
    write_hosts(
        &untrusted,
        &upstream.host(),
        &format!(
            "server = \"https://{}\"\nskip_verify = true\n",
            upstream.host()
        ),
    );
    let id = pull(&s2, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert_no_leftovers(&s);
    assert_no_leftovers(&s2);
}

/// A client certificate for `name` signed by the CA that `make_ca` made in `dir`:
/// (certificate, key).
fn make_client(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.cnf"),
    );
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        &format!("/CN={name}"),
    ]);
    fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )
    .expect("client ext");
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    (dir.join(crt), dir.join(key))
}

/// A registry that asks for client certificates (mutual TLS: `http.tls.clientcas`), reached
/// with hosts.toml's `client` in both of containerd's forms: a `[certificate, key]` pair,
/// and one file holding both (relative to the hosts.toml). Without a certificate, or with
/// one from another CA, the pull fails (UNAVAILABLE, as any TLS refusal) and says why.
#[tokio::test]
async fn mutual_tls_with_client_certificates() {
    if !tools_present() {
        return;
    }
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_ca(pki.path());
    let (client_crt, client_key) = make_client(pki.path(), "client");
    let other = pki.path().join("other");
    fs::create_dir_all(&other).expect("other CA dir");
    make_ca(&other);
    let (wrong_crt, wrong_key) = make_client(&other, "wrong");
    // Filled by skopeo (which has no client certificate), served by the mTLS registry.
    let plain = Registry::start(RegistryOptions::default());
    let mtls = Registry::start(RegistryOptions {
        tls: Some((cert, key)),
        client_ca: Some(ca.clone()),
        storage: Some(plain.storage()),
        ..Default::default()
    });
    let w1 = plain.push(&marker_image("mtls-pair", Compression::Gzip), "rrun/mtls:1");
    let w2 = plain.push(
        &marker_image("mtls-one-file", Compression::Zstd),
        "rrun/mtls:2",
    );
    plain.push(
        &marker_image("mtls-refused", Compression::Gzip),
        "rrun/mtls:3",
    );
    let w4 = plain.push(
        &marker_image("mtls-skip-verify", Compression::Gzip),
        "rrun/mtls:4",
    );

    let certs = pki.path().join("certs.d");
    let host_dir = certs.join(mtls.host());
    let hosts = |client: &str| {
        write_hosts(
            &certs,
            &mtls.host(),
            &format!(
                "server = \"https://{}\"\nca = \"{}\"\n{client}\n",
                mtls.host(),
                ca.display()
            ),
        )
    };
    hosts(&format!(
        "client = [[\"{}\", \"{}\"]]",
        client_crt.display(),
        client_key.display()
    ));
    let s = CriServer::start_with(
        "pullmtls",
        StartOptions {
            config_toml: Some(format!(
                "[registry]\nconfig_path = \"{}\"\n",
                certs.display()
            )),
            ..Default::default()
        },
    )
    .await;
    let name = |tag: u8| format!("{}/rrun/mtls:{tag}", mtls.host());

    let id = pull(&s, &name(1), None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w1.id);
    let top = w1.layer_digests.last().expect("layers");
    assert_eq!(mtls.blob_gets("rrun/mtls", top), 1, "{}", mtls.log_text());
    assert_eq!(plain.blob_gets("rrun/mtls", top), 0);
    let log = run_in(&s, "p", &name(1), "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "mtls-pair"), "{log:?}");

    // One file with the certificate and its key, named relative to the hosts.toml.
    let mut both = fs::read(&client_crt).expect("client.crt");
    both.extend(fs::read(&client_key).expect("client.key"));
    fs::write(host_dir.join("client.pem"), both).expect("client.pem");
    hosts("client = \"client.pem\"");
    let id = pull(&s, &name(2), None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w2.id);

    // `skip_verify` instead of the CA, with the client certificate: the gateway too takes it.
    write_hosts(
        &certs,
        &mtls.host(),
        &format!(
            "server = \"https://{}\"\nskip_verify = true\nclient = \"client.pem\"\n",
            mtls.host()
        ),
    );
    let id = pull(&s, &name(4), None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w4.id);

    hosts("");
    let e = expect_code(
        pull(&s, &name(3), None).await,
        Code::Unavailable,
        "no client cert",
    );
    assert!(
        e.message().contains("asks for a client certificate"),
        "{}",
        show(&e)
    );
    hosts(&format!(
        "client = [[\"{}\", \"{}\"]]",
        wrong_crt.display(),
        wrong_key.display()
    ));
    let e = expect_code(
        pull(&s, &name(3), None).await,
        Code::Unavailable,
        "wrong client cert",
    );
    assert!(
        e.message().contains("refused the client certificate"),
        "{}",
        show(&e)
    );
    hosts("client = \"missing.pem\"");
    let e = expect_code(
        pull(&s, &name(3), None).await,
        Code::FailedPrecondition,
        "missing client cert file",
    );
    assert!(e.message().contains("missing.pem"), "{}", show(&e));

    let mut tags: Vec<String> = list(&s)
        .await
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    tags.sort();
    assert_eq!(tags, [name(1), name(2), name(4)]);
    assert_no_leftovers(&s);
}

/// A mirror whose API is under a path (`http.prefix: /mirror/`, the API at `/mirror/v2/`),
/// named in hosts.toml as containerd reads such URLs: with the whole API root and
/// `override_path = true`, or without the `/v2` that is then appended. With
/// `override_path = true` on a URL lacking the `/v2`, the path is taken as the API root and
/// the registry answers 404 there: NOT_FOUND, naming that URL.
#[tokio::test]
async fn mirror_under_a_path_and_override_path() {
    if !tools_present() {
        return;
    }
    let upstream = Registry::start(RegistryOptions::default());
    let mirror = Registry::start(RegistryOptions {
        prefix: Some("/mirror/".into()),
        storage: Some(upstream.storage()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs.d");
    let hosts = |mirror_entry: &str| {
        write_hosts(
            &certs,
            &upstream.host(),
            &format!(
                "server = \"http://{}\"\n[host.\"http://{}{mirror_entry}\n  \
                 capabilities = [\"pull\", \"resolve\"]\n",
                upstream.host(),
                mirror.host()
            ),
        )
    };
    let s = CriServer::start_with(
        "pullprefix",
        StartOptions {
            config_toml: Some(format!(
                "[registry]\nconfig_path = \"{}\"\n",
                certs.display()
            )),
            ..Default::default()
        },
    )
    .await;
    let mirror_gets = |digest: &str| {
        let needle = format!("\"GET /mirror/v2/rrun/prefix/blobs/{digest}");
        mirror.log_text().matches(&needle).count()
    };

    for (tag, entry) in [
        (1, "/mirror/v2\"]\n  override_path = true"),
        (2, "/mirror\"]"),
    ] {
        let w = upstream.push(
            &marker_image(&format!("prefix-{tag}"), Compression::Gzip),
            &format!("rrun/prefix:{tag}"),
        );
        hosts(entry);
        let name = format!("{}/rrun/prefix:{tag}", upstream.host());
        let id = pull(&s, &name, None)
            .await
            .unwrap_or_else(|e| panic!("{entry}: {}", show(&e)));
        assert_eq!(id, w.id);
        let top = w.layer_digests.last().expect("layers");
        assert_eq!(mirror_gets(top), 1, "{entry}:\n{}", mirror.log_text());
        assert_eq!(upstream.blob_gets("rrun/prefix", top), 0, "{entry}");
    }

    // The mirror alone, its API root given without `/v2` and override_path set.
    upstream.push(
        &marker_image("prefix-3", Compression::Gzip),
        "rrun/prefix:3",
    );
    write_hosts(
        &certs,
        &upstream.host(),
        &format!(
            "server = \"http://{}/mirror\"\noverride_path = true\n",
            mirror.host()
        ),
    );
    let name = format!("{}/rrun/prefix:3", upstream.host());
    let e = expect_code(pull(&s, &name, None).await, Code::NotFound, "override_path");
    assert!(
        e.message()
            .contains(&format!("http://{}/mirror", mirror.host())),
        "{}",
        show(&e)
    );
    assert!(
        mirror
            .log_text()
            .contains("\"GET /mirror/rrun/prefix/manifests/3"),
        "{}",
        mirror.log_text()
    );
    assert_eq!(list(&s).await.len(), 2);
    assert_no_leftovers(&s);
}

/// A registry that stops answering (SIGSTOP: connections are accepted by the kernel, no
/// byte comes back) fails the pull after `image_pull_progress_timeout` with
/// DEADLINE_EXCEEDED; once it answers again, the pull works.
/// A mirror of `hosts.toml` that resolves the manifest but lacks a layer blob: that blob
/// alone comes from the upstream, the others from the mirror.
#[tokio::test]
async fn a_mirror_lacking_a_blob_falls_back_per_blob() {
    if !tools_present() {
        return;
    }
    let upstream = Registry::start(RegistryOptions::default());
    let mirror = Registry::start(RegistryOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs.d");
    write_hosts(
        &certs,
        &upstream.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            mirror.host()
        ),
    );
    let s = CriServer::start_with(
        "pullfallback",
        StartOptions {
            config_toml: Some(format!(
                "[registry]\nconfig_path = \"{}\"\n",
                certs.display()
            )),
            ..Default::default()
        },
    )
    .await;
    let spec = marker_image("per-blob", Compression::Gzip);
    let w = mirror.push(&spec, "rrun/fb:1");
    upstream.push(&spec, "rrun/fb:1");
    let top = w.layer_digests.last().expect("layers").clone();
    let base = w.layer_digests.first().expect("layers").clone();
    assert_ne!(top, base, "an image of two layers at least");
    fs::remove_file(mirror.blob_file(&top)).expect("removing a blob from the mirror");

    let name = format!("{}/rrun/fb:1", upstream.host());
    let id = pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert!(
        mirror.log_text().contains("\"GET /v2/rrun/fb/manifests/1"),
        "the mirror resolved it:\n{}",
        mirror.log_text()
    );
    assert!(
        !upstream.log_text().contains("\"GET /v2/rrun/fb/manifests/"),
        "the upstream was not asked for the manifest:\n{}",
        upstream.log_text()
    );
    assert_eq!(mirror.blob_gets("rrun/fb", &base), 1);
    assert_eq!(upstream.blob_gets("rrun/fb", &base), 0);
    assert_eq!(upstream.blob_gets("rrun/fb", &top), 1, "the missing blob");
    let log = run_in(&s, "p", &name, "cat /etc/marker; echo").await;
    assert!(log.iter().any(|l| l == "per-blob"), "{log:?}");
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn a_pull_without_progress_is_cancelled() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start_with(
        "pullstall",
        StartOptions {
            config_toml: Some("[registry]\nimage_pull_progress_timeout = \"2s\"\n".into()),
            ..Default::default()
        },
    )
    .await;
    let w = reg.push(&marker_image("stalled", Compression::Gzip), "rrun/stall:1");
    let name = format!("{}/rrun/stall:1", reg.host());
    let pid = nix::unistd::Pid::from_raw(reg.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP registry");
    let result = pull(&s, &name, None).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT registry");
    let e = expect_code(
        result,
        Code::DeadlineExceeded,
        "a registry that never answers",
    );
    assert!(e.message().contains("no progress"), "{}", show(&e));
    assert!(list(&s).await.is_empty());
    let id = pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    assert_no_leftovers(&s);
}

/// kill -9 of the server in the middle of a blob download (a proxy passes the first 4 MiB
/// of the layer and then holds the connection, so the kill lands mid-blob however busy the
/// machine is), then the pull again: it resumes the partial blob with a range request (the
/// registry sends only the rest) and the image is whole.
#[tokio::test]
async fn a_pull_killed_half_way_resumes() {
    if !tools_present() {
        return;
    }
    const FIRST: u64 = 4 << 20;
    let reg = Registry::start(RegistryOptions::default());
    let s = CriServer::start("pullkill").await;
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let spec = FixtureImage {
        compression: Compression::None,
        extra_layers: vec![LayerSpec {
            files: vec![("big".into(), big, 0o644)],
            ..Default::default()
        }],
        ..FixtureImage::default()
    };
    let w = reg.push(&spec, "rrun/big:1");
    let top = w.layer_digests.last().expect("layers").clone();
    let proxy = BlobProxy::start(reg.host(), &top, BlobFault::StallAfter(FIRST));
    let name = format!("{}/rrun/big:1", proxy.host());
    let ingest = s
        .root()
        .join("images/tmp")
        .join(format!("ingest-{}", top.trim_start_matches("sha256:")));
    let client = s.images();
    let first = tokio::spawn({
        let name = name.clone();
        let mut client = client.clone();
        async move {
            client
                .pull_image(api::PullImageRequest {
                    image: Some(image_spec(&name)),
                    auth: None,
                    sandbox_config: None,
                })
                .await
        }
    });
    wait_until(
        scaled_secs(60),
        "the first 4 MiB of the big layer downloaded",
        || fs::metadata(&ingest).is_ok_and(|m| m.len() >= FIRST),
    )
    .await;
    s.kill9();
    let _ = first.await;
    let partial = fs::metadata(&ingest).map(|m| m.len()).unwrap_or(0);
    assert_eq!(partial, FIRST, "the partial blob is kept for the next pull");
    assert_eq!(proxy.faulted(), 1);
    s.restart().await;
    let id = pull(&s, &name, None)
        .await
        .unwrap_or_else(|e| panic!("{}", show(&e)));
    assert_eq!(id, w.id);
    let blob_size = fs::metadata(reg.blob_file(&top)).expect("blob").len();
    // Every GET of the blob asks for a range (`bytes=OFFSET-`). The resumed one is the
    // rest; the killed one, which the proxy still holds, is logged only if the registry
    // could write all of it into the sockets' buffers (then as the whole blob).
    let rest = blob_size - partial;
    let sizes = || integration_tests::registry::blob_get_sizes(&reg.log_text(), "rrun/big", &top);
    // The registry logs a request once its handler returned, which may come after the
    // client has the last byte.
    wait_until(
        scaled_secs(10),
        "the registry's log line of the resumed GET",
        || sizes().contains(&rest),
    )
    .await;
    let sizes = sizes();
    assert_eq!(
        sizes.iter().filter(|&&n| n == rest).count(),
        1,
        "one GET of the rest ({blob_size} bytes, {partial} kept): {sizes:?}"
    );
    assert!(
        sizes.len() <= 2 && sizes.iter().all(|&n| n == rest || n == blob_size),
        "no other download of the blob: {sizes:?}"
    );
    assert!(!ingest.exists(), "the partial blob is gone once stored");
    let log = run_in(&s, "p", &name, "wc -c < /big").await;
    assert!(
        log.iter().any(|l| l.trim() == (24u32 << 20).to_string()),
        "{log:?}"
    );
    assert_no_leftovers(&s);
}

fn scaled_secs(n: u64) -> Duration {
    integration_tests::scaled(Duration::from_secs(n))
}

/// `rrun-cri image pull|list|inspect|rm` on the store of a running server: the pull (with
/// the password on stdin, not in the command line) prints a line per layer, and the server
/// sees the image at once; `rm` empties the store again.
#[tokio::test]
async fn the_image_command_line_shares_the_servers_store() {
    if !tools_present() {
        return;
    }
    let password = "cli-Pa55word";
    let reg = Registry::start(RegistryOptions {
        credentials: Some(("cli".into(), password.into())),
        ..Default::default()
    });
    let s = CriServer::start("pullcli").await;
    let w = reg.push(&marker_image("by-the-cli", Compression::Zstd), "rrun/cli:1");
    let name = format!("{}/rrun/cli:1", reg.host());
    let cli = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(cri_binary())
            .arg("--root")
            .arg(s.root())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running rrun-cri");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("writing stdin");
        child.wait_with_output().expect("rrun-cri output")
    };
    let out = cli(
        &["image", "pull", "--creds", "cli", &name],
        &format!("{password}\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "image pull: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("layer 0 ") && stdout.contains("done"),
        "{stdout}"
    );
    assert!(stdout.contains(&w.id), "{stdout}");
    let listed = list(&s).await;
    assert_eq!(
        listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![w.id.clone()]
    );

    let out = cli(&["image", "inspect", &name], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&w.manifest_digest),
        "{text}"
    );

    let wrong = cli(&["image", "pull", "--creds", "cli:nope", &name], "");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("unauthenticated") && !err.contains("nope"),
        "{err}"
    );

    let out = cli(&["image", "rm", &name], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(list(&s).await.is_empty());
    assert_eq!(store_entries(&s), Vec::<String>::new());
    assert!(!s.stderr().contains(password));
    assert_no_leftovers(&s);
}
