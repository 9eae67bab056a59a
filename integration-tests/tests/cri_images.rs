//! `cri_images`: the CRI server's image store and ImageService end to end: archives of
//! every format (oci-archive, docker-archive, OCI layout dir; plain, gzip and zstd layers)
//! imported with `rrun-cri image import`, ListImages/ImageStatus, PullImage of a present
//! and a missing image, RemoveImage while a container uses it, whiteouts, per-container
//! writable layers and ImageFsInfo. Images are built by `rootfs_fixtures::image`.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use integration_tests::cri::*;

const T30: Duration = Duration::from_secs(30);

fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

async fn image_status(s: &CriServer, image: &str, verbose: bool) -> api::ImageStatusResponse {
    s.images()
        .image_status(api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {}", show(&e)))
        .into_inner()
}

async fn list_images(s: &CriServer, filter: Option<&str>) -> Vec<api::Image> {
    s.images()
        .list_images(api::ListImagesRequest {
            filter: filter.map(|f| api::ImageFilter {
                image: Some(image_spec(f)),
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("ListImages: {}", show(&e)))
        .into_inner()
        .images
}

#[tokio::test]
async fn every_archive_format_imports_and_runs() {
    let s = CriServer::start("formats").await;
    let cases = [
        (ArchiveFormat::OciArchive, Compression::Gzip),
        (ArchiveFormat::OciArchive, Compression::Zstd),
        (ArchiveFormat::OciArchive, Compression::None),
        (ArchiveFormat::DockerArchive, Compression::None),
        (ArchiveFormat::DockerArchive, Compression::Gzip),
        (ArchiveFormat::OciLayoutDir, Compression::Zstd),
        (ArchiveFormat::OciLayoutDir, Compression::Gzip),
    ];
    let pod = s.pod_config("p");
    let pod_id = s.run_pod(&pod).await;
    for (n, (format, compression)) in cases.into_iter().enumerate() {
        let reference = format!("localhost/rrun-format:{n}");
        let marker = format!("{format:?}-{compression:?}");
        let id = s.import(&FixtureImage {
            reference: reference.clone(),
            format,
            compression,
            extra_layers: vec![LayerSpec {
                files: vec![("etc/marker".into(), marker.clone().into_bytes(), 0o644)],
                ..Default::default()
            }],
            ..FixtureImage::default()
        });
        let st = image_status(&s, &reference, false).await;
        let img = st
            .image
            .unwrap_or_else(|| panic!("{marker}: ImageStatus {reference}: not found after import"));
        assert_eq!(hex(&img.id), hex(&id), "{marker}: image id");
        assert!(
            img.repo_tags.contains(&reference),
            "{marker}: repo_tags {:?}",
            img.repo_tags
        );
        assert!(img.size > 0, "{marker}: size 0");

        let cfg = s.container_config(
            &format!("c{n}"),
            &reference,
            &["sh", "-c", "cat /etc/marker; echo; echo done"],
        );
        let c = s.run_container(&pod_id, &pod, &cfg).await;
        let st = s.wait_exited(&c).await;
        assert_eq!(st.exit_code, 0, "{marker}: {st:?}");
        assert_eq!(
            hex(&st.image_ref),
            hex(&id),
            "{marker}: container image_ref"
        );
        let log = wait_log_line(&CriServer::log_path(&pod, &cfg), "done", T30).await;
        assert!(
            log.iter().any(|l| l.text == marker),
            "{marker}: the top layer's file in the container: {log:?}"
        );
    }
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn list_images_and_image_status() {
    let s = CriServer::start("imglist").await;
    let a = s.import(&FixtureImage {
        reference: "localhost/rrun-list-a:1".into(),
        labels: BTreeMap::from([("org.rrun.test".into(), "label-a".into())]),
        env: vec![DEFAULT_PATH.into(), "IMAGE_ENV=a".into()],
        ..FixtureImage::default()
    });
    // A short name is normalised as docker does.
    let b = s.import(&FixtureImage {
        reference: "rrun-list-b:2".into(),
        cmd: vec!["sh".into(), "-c".into(), "echo b".into()],
        ..FixtureImage::default()
    });
    assert_ne!(hex(&a), hex(&b));

    let all = list_images(&s, None).await;
    let ia = all
        .iter()
        .find(|i| hex(&i.id) == hex(&a))
        .unwrap_or_else(|| panic!("image a not listed: {all:?}"));
    assert_eq!(ia.repo_tags, vec!["localhost/rrun-list-a:1".to_string()]);
    assert!(ia.size > 0);
    let ib = all
        .iter()
        .find(|i| hex(&i.id) == hex(&b))
        .unwrap_or_else(|| panic!("image b not listed: {all:?}"));
    assert_eq!(
        ib.repo_tags,
        vec!["docker.io/library/rrun-list-b:2".to_string()],
        "short names are normalised"
    );
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(ia.uid.as_ref().map(|u| u.value), Some(0), "no user: uid 0");

    let only = list_images(&s, Some("localhost/rrun-list-a:1")).await;
    assert_eq!(only.len(), 1, "ListImages with a filter: {only:?}");
    assert_eq!(hex(&only[0].id), hex(&a));

    // The name as given, the normalised name, the id: all find the image.
    for name in [
        "rrun-list-b:2",
        "docker.io/library/rrun-list-b:2",
        b.as_str(),
    ] {
        let st = image_status(&s, name, false).await;
        let img = st
            .image
            .unwrap_or_else(|| panic!("ImageStatus {name}: not found"));
        assert_eq!(hex(&img.id), hex(&b), "ImageStatus {name}");
    }

    // verbose: the image config as info.
    let st = image_status(&s, "localhost/rrun-list-a:1", true).await;
    let info = st
        .info
        .get("info")
        .unwrap_or_else(|| panic!("verbose ImageStatus: no \"info\" key in {:?}", st.info));
    let v: serde_json::Value =
        serde_json::from_str(info).unwrap_or_else(|e| panic!("info is not JSON ({e}): {info}"));
    let text = v.to_string();
    assert!(
        text.contains("label-a"),
        "image labels not in the verbose info: {info}"
    );
    assert!(
        text.contains("IMAGE_ENV=a"),
        "image env not in the verbose info: {info}"
    );

    // The image's user, which the kubelet checks for runAsNonRoot.
    s.import(&FixtureImage {
        reference: "localhost/rrun-list-uid:1".into(),
        user: "1000:1000".into(),
        ..FixtureImage::default()
    });
    s.import(&FixtureImage {
        reference: "localhost/rrun-list-user:1".into(),
        user: "app".into(),
        ..FixtureImage::default()
    });
    let img = image_status(&s, "localhost/rrun-list-uid:1", false)
        .await
        .image
        .expect("uid image");
    assert_eq!(
        img.uid.map(|u| u.value),
        Some(1000),
        "Image.uid of user 1000:1000"
    );
    assert_eq!(img.username, "", "{img:?}");
    let img = image_status(&s, "localhost/rrun-list-user:1", false)
        .await
        .image
        .expect("user image");
    assert_eq!(img.username, "app", "Image.username of user app");
    assert_eq!(img.uid, None, "{img:?}");

    // A missing image is not an error: the answer has no image (the kubelet relies on it).
    let st = image_status(&s, "localhost/rrun-not-here:1", false).await;
    assert!(
        st.image.is_none(),
        "ImageStatus of a missing image: {:?}",
        st.image
    );
}

#[tokio::test]
async fn pull_image_of_present_and_missing_images() {
    let s = CriServer::start("pull").await;
    let id = s.import_busybox();
    let r = s
        .images()
        .pull_image(api::PullImageRequest {
            image: Some(image_spec(BUSYBOX)),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage of a present image: {}", show(&e)))
        .into_inner();
    assert!(!r.image_ref.is_empty(), "PullImage: empty image_ref");
    assert_eq!(
        hex(&r.image_ref),
        hex(&id),
        "PullImage image_ref is the image id"
    );

    let missing = "localhost/rrun-never-imported:7";
    let e = s
        .images()
        .pull_image(api::PullImageRequest {
            image: Some(image_spec(missing)),
            auth: None,
            sandbox_config: None,
        })
        .await
        .expect_err("PullImage of a missing image succeeded");
    assert!(
        e.message().contains("rrun-never-imported"),
        "PullImage error should name the image: {}",
        show(&e)
    );
    assert!(
        matches!(
            e.code(),
            Code::NotFound | Code::Unimplemented | Code::Unavailable | Code::FailedPrecondition
        ),
        "PullImage of a missing image: {}",
        show(&e)
    );
    // Nothing half-pulled.
    let listed = list_images(&s, None).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn remove_image_refused_while_a_container_uses_it() {
    let s = CriServer::start("rmimage").await;
    let id = s.import_busybox();
    let pod = s.pod_config("p");
    let pod_id = s.run_pod(&pod).await;
    let c = s
        .create_container(&pod_id, &pod, &s.sh_config("user", "true"))
        .await;
    let rm = |image: String| {
        let mut cl = s.images();
        async move {
            cl.remove_image(api::RemoveImageRequest {
                image: Some(image_spec(&image)),
            })
            .await
        }
    };
    for name in [BUSYBOX.to_string(), id.clone()] {
        let e = rm(name.clone())
            .await
            .expect_err("RemoveImage of an image a container uses succeeded");
        let msg = e.message().to_lowercase();
        assert!(
            msg.contains("in use") || msg.contains("used by") || msg.contains(&c),
            "RemoveImage {name}: the message should say a container uses it: {}",
            show(&e)
        );
        assert_ne!(e.code(), Code::Ok);
    }
    assert!(
        image_status(&s, BUSYBOX, false).await.image.is_some(),
        "the image went away although RemoveImage failed"
    );
    s.remove_container(&c).await;
    rm(BUSYBOX.to_string())
        .await
        .unwrap_or_else(|e| panic!("RemoveImage after the container's removal: {}", show(&e)));
    assert!(image_status(&s, BUSYBOX, false).await.image.is_none());
    assert!(list_images(&s, None).await.is_empty());
    // Idempotent.
    rm(BUSYBOX.to_string())
        .await
        .unwrap_or_else(|e| panic!("RemoveImage of a removed image: {}", show(&e)));
    // The layers are gone from the store too (nothing else uses them).
    let mut blobs = Vec::new();
    walk_files(&s.root().join("images"), &mut blobs);
    let big: Vec<_> = blobs
        .iter()
        .filter(|(_, size)| *size > 512 * 1024)
        .collect();
    assert!(
        big.is_empty(),
        "large files left in the image store: {big:?}"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

fn walk_files(dir: &std::path::Path, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk_files(&e.path(), out);
        } else if ft.is_file() {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((e.path().display().to_string(), size));
        }
    }
}

#[tokio::test]
async fn whiteouts_hide_what_upper_layers_deleted() {
    let s = CriServer::start("whiteout").await;
    let file = |p: &str| (p.to_string(), format!("{p}\n").into_bytes(), 0o644);
    s.import(&FixtureImage {
        reference: "localhost/rrun-whiteout:1".into(),
        extra_layers: vec![
            LayerSpec {
                files: vec![
                    file("data/keep"),
                    file("data/gone"),
                    file("opaque/old1"),
                    file("opaque/sub/old2"),
                ],
                ..Default::default()
            },
            LayerSpec {
                files: vec![file("opaque/new")],
                whiteouts: vec!["data/gone".into(), "bin/vi".into()],
                opaque_dirs: vec!["opaque".into()],
            },
        ],
        ..FixtureImage::default()
    });
    let pod = s.pod_config("p");
    let pod_id = s.run_pod(&pod).await;
    let cfg = s.container_config(
        "c",
        "localhost/rrun-whiteout:1",
        &[
            "sh",
            "-c",
            "echo data:$(ls /data); echo opaque:$(ls -a /opaque | grep -v '^\\.\\.\\?$'); \
             echo vi:$(ls /bin/vi 2>/dev/null); echo wh:$(find / -xdev -name '.wh.*' | wc -l); \
             echo end",
        ],
    );
    let c = s.run_container(&pod_id, &pod, &cfg).await;
    let st = s.wait_exited(&c).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let log = wait_log_line(&CriServer::log_path(&pod, &cfg), "end", T30).await;
    let texts: Vec<&str> = log.iter().map(|l| l.text.as_str()).collect();
    assert!(
        texts.contains(&"data:keep"),
        "a whiteout deletes data/gone: {texts:?}"
    );
    assert!(
        texts.contains(&"opaque:new"),
        "an opaque dir hides the lower layers' entries: {texts:?}"
    );
    assert!(
        texts.contains(&"vi:"),
        "a whiteout deletes a busybox file: {texts:?}"
    );
    assert!(
        texts.contains(&"wh:0"),
        "whiteout files visible in the container: {texts:?}"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn writes_stay_in_their_containers_layer() {
    let (s, pod, pod_id) = CriServer::with_busybox_pod("cow").await;
    let w = s.sh_config(
        "writer",
        "echo leaked > /leak-marker && rm /etc/passwd && echo wrote",
    );
    let wid = s.run_container(&pod_id, &pod, &w).await;
    let st = s.wait_exited(&wid).await;
    assert_eq!(st.exit_code, 0, "writer: {st:?}");
    let r = s.sh_config(
        "reader",
        "if [ -e /leak-marker ]; then echo leak-visible; fi; \
         if [ -e /etc/passwd ]; then echo passwd-present; fi; echo end",
    );
    let rid = s.run_container(&pod_id, &pod, &r).await;
    s.wait_exited(&rid).await;
    let log = wait_log_line(&CriServer::log_path(&pod, &r), "end", T30).await;
    let texts: Vec<&str> = log.iter().map(|l| l.text.as_str()).collect();
    assert!(
        !texts.contains(&"leak-visible"),
        "a write leaked to another container"
    );
    assert!(
        texts.contains(&"passwd-present"),
        "a deletion leaked to another container: {texts:?}"
    );
    // The image's unpacked layers were not written through.
    s.remove_container(&wid).await;
    let mut files = Vec::new();
    walk_files(s.root(), &mut files);
    let leaked: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.ends_with("/leak-marker"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the writer's file is still in the store after its removal: {leaked:?}"
    );
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn image_fs_info_is_non_zero() {
    let s = CriServer::start("fsinfo").await;
    s.import_busybox();
    let r = s
        .images()
        .image_fs_info(api::ImageFsInfoRequest {})
        .await
        .unwrap_or_else(|e| panic!("ImageFsInfo: {}", show(&e)))
        .into_inner();
    let fs0 = r
        .image_filesystems
        .first()
        .unwrap_or_else(|| panic!("ImageFsInfo: no image filesystem: {r:?}"));
    assert!(fs0.timestamp > 0, "{fs0:?}");
    let mp = fs0
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.clone())
        .unwrap_or_default();
    assert!(!mp.is_empty(), "no mountpoint: {fs0:?}");
    assert!(
        fs0.used_bytes.as_ref().map(|v| v.value).unwrap_or(0) > 1024 * 1024,
        "used bytes with busybox imported: {fs0:?}"
    );
    assert!(
        fs0.inodes_used.as_ref().map(|v| v.value).unwrap_or(0) > 0,
        "inodes used: {fs0:?}"
    );
}

#[tokio::test]
async fn a_corrupted_blob_is_refused_on_import() {
    let s = CriServer::start("corrupt").await;
    let (dir, _) = s.write_archive(&FixtureImage {
        reference: "localhost/rrun-corrupt:1".into(),
        format: ArchiveFormat::OciLayoutDir,
        compression: Compression::None,
        ..FixtureImage::default()
    });
    // Flip one byte in the middle of the biggest blob (the busybox layer).
    let mut blobs = Vec::new();
    walk_files(&dir.join("blobs"), &mut blobs);
    let (path, size) = blobs
        .iter()
        .max_by_key(|(_, size)| *size)
        .cloned()
        .expect("blobs in the layout");
    let mut data = fs::read(&path).expect("read blob");
    let at = (size / 2) as usize;
    data[at] ^= 0xff;
    fs::write(&path, &data).expect("write blob");
    let before = s.state_paths();
    let out = s.import_file(&dir);
    assert!(
        !out.status.success(),
        "importing a layout with a corrupted blob succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("sha256") || err.contains("digest"),
        "the error should say the digest does not match: {err}"
    );
    assert!(
        list_images(&s, None).await.is_empty(),
        "a corrupted image was stored"
    );
    let leftovers: Vec<_> = s
        .state_paths()
        .difference(&before)
        .filter(|p| p.is_file())
        .cloned()
        .collect();
    assert!(
        leftovers.is_empty(),
        "a refused import left files: {leftovers:?}"
    );
}

/// The lowest `lowerdir` of the overlay mounted at `/` in `pid`'s mount namespace.
fn lowest_layer(pid: i32) -> String {
    let mi = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = integration_tests::parse_mountinfo(&mi)
        .into_iter()
        .find(|m| m.mount_point == "/")
        .expect("a root mount");
    assert_eq!(
        root.fstype, "overlay",
        "the rootfs is not an overlay: {root:?}"
    );
    let lower = root
        .super_options
        .split(',')
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap_or_else(|| panic!("no lowerdir in {}", root.super_options));
    lower.rsplit(':').next().unwrap_or(lower).to_string()
}

#[tokio::test]
async fn layers_are_shared_between_images() {
    let s = CriServer::start("shared").await;
    let mk = |n: u32| FixtureImage {
        reference: format!("localhost/rrun-shared:{n}"),
        extra_layers: vec![LayerSpec {
            files: vec![(format!("etc/image-{n}"), b"x\n".to_vec(), 0o644)],
            ..Default::default()
        }],
        ..FixtureImage::default()
    };
    s.import(&mk(1));
    s.import(&mk(2));
    let pod = s.pod_config("p");
    let pod_id = s.run_pod(&pod).await;
    let mut pids = Vec::new();
    for n in [1, 2] {
        let cfg = s.container_config(
            &format!("c{n}"),
            &format!("localhost/rrun-shared:{n}"),
            &["sh", "-c", "exec sleep 1000"],
        );
        let c = s.run_container(&pod_id, &pod, &cfg).await;
        s.wait_state(&c, api::ContainerState::ContainerRunning, T30)
            .await;
        pids.push(s.container_pid(&c).await);
    }
    let (a, b) = (lowest_layer(pids[0]), lowest_layer(pids[1]));
    assert_eq!(a, b, "the busybox layer is unpacked once and shared");
    s.stop_and_remove_pod(&pod_id).await;
    assert_no_leftovers(&s);
}

#[tokio::test]
async fn reimport_is_idempotent_and_a_tag_moves_to_the_new_image() {
    let s = CriServer::start("retag").await;
    let spec = FixtureImage {
        reference: "localhost/rrun-retag:1".into(),
        ..FixtureImage::default()
    };
    let (archive, a) = s.write_archive(&spec);
    for _ in 0..2 {
        let out = s.import_file(&archive);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = list_images(&s, None).await;
    assert_eq!(all.len(), 1, "the same archive twice: {all:?}");
    assert_eq!(hex(&all[0].id), hex(&a));

    // Another image under the same name takes the tag.
    let b = s.import(&FixtureImage {
        cmd: vec!["sh".into(), "-c".into(), "echo new".into()],
        ..spec.clone()
    });
    assert_ne!(hex(&a), hex(&b));
    let st = image_status(&s, "localhost/rrun-retag:1", false).await;
    assert_eq!(
        st.image.as_ref().map(|i| hex(&i.id).to_string()),
        Some(hex(&b).to_string()),
        "the tag did not move to the new image"
    );
    for img in list_images(&s, None).await {
        if hex(&img.id) == hex(&a) {
            assert!(
                !img.repo_tags
                    .contains(&"localhost/rrun-retag:1".to_string()),
                "the old image still carries the moved tag: {img:?}"
            );
        }
    }
}
