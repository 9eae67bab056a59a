//! End-to-end tests of the store, as root: real imports of archives written by
//! `rootfs_fixtures::image` (an independent writer), real overlay mounts, and what a
//! process sees in them. Every mount is undone by a guard, on panic too, before the
//! temporary directories go.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rootfs_fixtures::image::{
    digest_of, write_image, write_images, ArchiveFormat, Compression, ImageSpec, LayerSpec,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::rootfs::is_mounted;
use super::store::resolve_in;
use super::{ImageError, ImageStore};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the image store tests mount overlays and create device nodes: run them as root"
    );
}

/// Unmounts a container's rootfs when dropped (declare it after the temp dir holding it).
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = ImageStore::unmount_rootfs(&self.0) {
            eprintln!("cleanup: {e}");
            let _ = nix::mount::umount2(&self.0.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn file(path: &str, content: &str) -> (String, Vec<u8>, u32) {
    (path.into(), content.as_bytes().to_vec(), 0o644)
}

/// Busybox plus two layers: the second adds files, the third deletes some of them (and a
/// busybox one) and makes `/srv` opaque.
fn layered(reference: &str, format: ArchiveFormat, compression: Compression) -> ImageSpec {
    ImageSpec {
        reference: reference.into(),
        format,
        compression,
        cmd: vec!["cat".into(), "/etc/layer2.txt".into()],
        env: vec!["PATH=/bin".into(), "ONE=1".into()],
        workdir: "/srv".into(),
        labels: BTreeMap::from([("tier".to_string(), "test".to_string())]),
        extra_layers: vec![
            LayerSpec {
                files: vec![
                    file("etc/layer2.txt", "two\n"),
                    file("etc/gone.txt", "deleted above\n"),
                    file("srv/old.txt", "hidden by the opaque dir\n"),
                    file("srv/sub/deep.txt", "hidden too\n"),
                    (
                        "bin/hello".into(),
                        b"#!/bin/sh\necho hello from layer 2\n".to_vec(),
                        0o755,
                    ),
                ],
                ..LayerSpec::default()
            },
            LayerSpec {
                files: vec![
                    file("etc/layer3.txt", "three\n"),
                    file("srv/new.txt", "new\n"),
                ],
                whiteouts: vec!["etc/gone.txt".into(), "etc/hosts".into()],
                opaque_dirs: vec!["srv".into()],
            },
        ],
        ..ImageSpec::default()
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_store_empty(root: &Path) {
    for sub in ["blobs/sha256", "layers", "images", "tmp"] {
        assert!(
            dir_names(&root.join(sub)).is_empty(),
            "{sub} not empty: {:?}",
            dir_names(&root.join(sub))
        );
    }
}

#[test]
fn imports_mounts_and_unmounts_each_format() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let formats = [
        (
            ArchiveFormat::OciArchive,
            Compression::Gzip,
            "oci.tar",
            "oci:1",
        ),
        (
            ArchiveFormat::DockerArchive,
            Compression::None,
            "docker.tar",
            "docker-img:2",
        ),
        (
            ArchiveFormat::OciLayoutDir,
            Compression::Zstd,
            "layout",
            "localhost:5000/layout/img",
        ),
    ];
    let mut ids = Vec::new();
    for (format, compression, name, reference) in formats {
        let archive = tmp.path().join(name);
        let spec = layered(reference, format, compression);
        let written = write_images(&archive, format, std::slice::from_ref(&spec))
            .unwrap()
            .remove(0);
        let id = written.id.clone();
        let imported = store.import(&archive).unwrap();
        assert_eq!(imported.len(), 1, "{name}");
        let image = &imported[0];
        assert_eq!(image.id, id, "{name}: the id is the config digest");
        let tag = super::normalize_reference(reference).unwrap();
        // All three archives hold the same image (same config): names add up.
        assert_eq!(image.repo_tags.last(), Some(&tag), "{name}");
        assert_eq!(image.layers.len(), 3);
        assert!(image.size > 1_000_000, "{name}: size {}", image.size);
        if ids.is_empty() {
            assert_eq!(
                image.size, written.size,
                "{name}: compressed layers + config"
            );
        }
        let config = image.config.config().as_ref().unwrap();
        assert_eq!(
            config.cmd().as_ref().unwrap(),
            &vec!["cat".to_string(), "/etc/layer2.txt".into()]
        );
        assert_eq!(config.working_dir().as_deref(), Some("/srv"));
        let repo = tag.rsplit_once(':').map(|(r, _)| r).unwrap();
        // A docker archive has no manifest: the store made one when the image came first.
        let manifest = match format {
            ArchiveFormat::DockerArchive => &image.manifest_digest,
            _ => &written.manifest_digest,
        };
        let digest_ref = format!("{repo}@{manifest}");
        assert!(
            image.repo_digests.contains(&digest_ref),
            "{name}: {:?}",
            image.repo_digests
        );

        // Every way to name it finds it.
        let short = &id["sha256:".len().."sha256:".len() + 12];
        for r in [id.as_str(), &id[7..], short, &tag, reference, &digest_ref] {
            assert_eq!(
                store.resolve(r).unwrap().map(|i| i.id),
                Some(id.clone()),
                "{name}: resolve {r}"
            );
        }

        let container = tmp.path().join(format!("c-{name}"));
        let _guard = MountGuard(container.clone());
        let rootfs = store.mount_rootfs(image, &container).unwrap();
        assert_eq!(rootfs, container.canonicalize().unwrap().join("rootfs"));
        assert!(is_mounted(&rootfs).unwrap());
        // One file from each layer.
        assert!(rootfs.join("bin/busybox").is_file(), "{name}: layer 1");
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/layer2.txt")).unwrap(),
            "two\n",
            "{name}: layer 2"
        );
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/layer3.txt")).unwrap(),
            "three\n",
            "{name}: layer 3"
        );
        // Whiteouts: from the layer below and from busybox.
        assert!(!rootfs.join("etc/gone.txt").exists(), "{name}");
        assert!(
            fs::symlink_metadata(rootfs.join("etc/hosts")).is_err(),
            "{name}"
        );
        assert!(rootfs.join("etc/passwd").is_file());
        // The opaque dir shows only its own layer's contents.
        assert_eq!(dir_names(&rootfs.join("srv")), vec!["new.txt"], "{name}");
        // Ownership and modes came through.
        let home = fs::metadata(rootfs.join("home/app")).unwrap();
        assert_eq!((home.uid(), home.gid()), (1000, 1000), "{name}");
        assert_eq!(
            fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert!(fs::symlink_metadata(rootfs.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink());
        // A process runs in it.
        let out = Command::new("chroot")
            .arg(&rootfs)
            .args(["/bin/sh", "-c", "hello; cat /etc/layer3.txt; ls /srv"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from layer 2\nthree\nnew.txt\n"
        );
        // Writes land in the upper dir; the layers are untouched.
        fs::write(rootfs.join("etc/written"), "w").unwrap();
        fs::remove_file(rootfs.join("etc/layer2.txt")).unwrap();
        let upper = container.join("upper");
        assert_eq!(fs::read_to_string(upper.join("etc/written")).unwrap(), "w");
        assert!(fs::symlink_metadata(upper.join("etc/layer2.txt"))
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(image.layer_dirs[1].join("etc/layer2.txt").is_file());
        // A second mount over a mounted rootfs is refused, and leaves the first alone.
        assert!(matches!(
            store.mount_rootfs(image, &container),
            Err(ImageError::AlreadyMounted(_))
        ));
        assert!(is_mounted(&rootfs).unwrap());

        ImageStore::unmount_rootfs(&container).unwrap();
        assert!(!is_mounted(&rootfs).unwrap());
        assert!(!upper.exists() && !container.join("work").exists() && !rootfs.exists());
        ImageStore::unmount_rootfs(&container).unwrap();
        ids.push(id);
    }
    // Same config in all three archives (diff ids do not depend on compression), so one image
    // with three names.
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let all = store.list().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].repo_tags.len(), 3);
    // Three compressions, one layer set: each chain unpacked once.
    assert_eq!(
        dir_names(&store.root().join("layers")).len(),
        6,
        "3 dirs and their chain id files"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(tmp.path().to_str().unwrap()));
}

#[test]
fn single_layer_image_gets_an_upper_dir_per_container() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let archive = tmp.path().join("bb.tar");
    write_image(&archive, &ImageSpec::default()).unwrap();
    let image = store.import(&archive).unwrap().remove(0);
    assert_eq!(image.repo_tags, ["docker.io/library/busybox:latest"]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let _ga = MountGuard(a.clone());
    let _gb = MountGuard(b.clone());
    let ra = store.mount_rootfs(&image, &a).unwrap();
    let rb = store.mount_rootfs(&image, &b).unwrap();
    fs::write(ra.join("only-in-a"), "a").unwrap();
    assert!(
        !rb.join("only-in-a").exists(),
        "each container has its own upper dir"
    );
    assert!(a.join("upper/only-in-a").is_file());
    // Removing the image while mounted is the server's to refuse; unmounting needs nothing
    // from the store.
    ImageStore::unmount_rootfs(&a).unwrap();
    ImageStore::unmount_rootfs(&b).unwrap();
    assert!(!is_mounted(&ra).unwrap() && !is_mounted(&rb).unwrap());

    // A mount that fails (here: more layers than one page of options holds) leaves nothing.
    let mut huge = image.clone();
    huge.layers = vec![image.layers[0].clone(); 300];
    let c = tmp.path().join("huge");
    let _gc = MountGuard(c.clone());
    let err = store.mount_rootfs(&huge, &c).unwrap_err();
    assert!(err.to_string().contains("too many layers"), "{err}");
    assert!(dir_names(&c).is_empty(), "{:?}", dir_names(&c));
    // A removed image's layers are missing: a clear error, nothing mounted.
    store.remove(&image.id).unwrap();
    let err = store.mount_rootfs(&image, &c).unwrap_err();
    assert!(err.to_string().contains("not in the store"), "{err}");
    assert!(dir_names(&c).is_empty());
}

#[test]
fn unmount_is_lazy_when_busy() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let archive = tmp.path().join("bb.tar");
    write_image(&archive, &ImageSpec::default()).unwrap();
    let image = store.import(&archive).unwrap().remove(0);
    let c = tmp.path().join("c");
    let _g = MountGuard(c.clone());
    let rootfs = store.mount_rootfs(&image, &c).unwrap();
    // An open directory keeps the mount busy.
    let busy = fs::File::open(rootfs.join("etc")).unwrap();
    ImageStore::unmount_rootfs(&c).unwrap();
    assert!(!is_mounted(&rootfs).unwrap());
    drop(busy);
}

#[test]
fn several_images_in_one_archive() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    for format in [ArchiveFormat::OciArchive, ArchiveFormat::DockerArchive] {
        // A store per format: both formats make the same images.
        let store = ImageStore::open(&tmp.path().join(format!("s-{format:?}"))).unwrap();
        let archive = tmp.path().join(format!("{format:?}.tar"));
        let specs = [
            ImageSpec {
                reference: format!("multi/{format:?}:one").to_lowercase(),
                ..ImageSpec::default()
            },
            ImageSpec {
                reference: format!("multi/{format:?}:alias").to_lowercase(),
                ..ImageSpec::default()
            },
            ImageSpec {
                reference: format!("multi/{format:?}:two").to_lowercase(),
                cmd: vec!["true".into()],
                extra_layers: vec![LayerSpec {
                    files: vec![file("two", "2")],
                    ..LayerSpec::default()
                }],
                ..ImageSpec::default()
            },
        ];
        let written = write_images(&archive, format, &specs).unwrap();
        let imported = store.import(&archive).unwrap();
        assert_eq!(
            imported.len(),
            2,
            "{format:?}: the first two specs are one image"
        );
        assert_eq!(imported[0].id, written[0].id);
        assert_eq!(
            imported[0].repo_tags.len(),
            2,
            "{format:?}: {:?}",
            imported[0].repo_tags
        );
        assert_eq!(imported[1].id, written[2].id);
        // Both images share the busybox layer directory.
        assert_eq!(imported[0].layers[0].dir, imported[1].layers[0].dir);
    }
}

#[test]
fn tag_moves_and_reimport_is_idempotent() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let a = tmp.path().join("a.tar");
    let b = tmp.path().join("b.tar");
    let id_a = write_image(
        &a,
        &ImageSpec {
            reference: "app:1".into(),
            ..ImageSpec::default()
        },
    )
    .unwrap();
    let id_b = write_image(
        &b,
        &ImageSpec {
            reference: "app:1".into(),
            cmd: vec!["true".into()],
            ..ImageSpec::default()
        },
    )
    .unwrap();
    assert_ne!(id_a, id_b);
    store.import(&a).unwrap();
    let before = store.get(&id_a).unwrap().unwrap();
    assert_eq!(
        store.import(&a).unwrap()[0],
        before,
        "re-importing changes nothing"
    );
    assert_eq!(store.list().unwrap().len(), 1);

    store.import(&b).unwrap();
    let tag = "docker.io/library/app:1";
    assert_eq!(store.resolve("app:1").unwrap().unwrap().id, id_b);
    let old = store.get(&id_a).unwrap().unwrap();
    assert!(
        old.repo_tags.is_empty(),
        "the tag moved: {:?}",
        old.repo_tags
    );
    assert_eq!(store.get(&id_b).unwrap().unwrap().repo_tags, [tag]);
    // The old image stays, reachable by id and by its repo digest.
    assert_eq!(store.resolve(&id_a).unwrap().unwrap().id, id_a);
    assert_eq!(
        store.resolve(&old.repo_digests[0]).unwrap().unwrap().id,
        id_a
    );
    assert_eq!(store.list().unwrap().len(), 2);
    // And it gets the tag back when imported again.
    store.import(&a).unwrap();
    assert_eq!(store.resolve(tag).unwrap().unwrap().id, id_a);
    assert!(store.get(&id_b).unwrap().unwrap().repo_tags.is_empty());
}

#[test]
fn remove_keeps_shared_layers() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let archive = tmp.path().join("ab.tar");
    let extra = |name: &str| LayerSpec {
        files: vec![file(name, name)],
        ..LayerSpec::default()
    };
    let specs = [
        ImageSpec {
            reference: "a".into(),
            extra_layers: vec![extra("a")],
            ..ImageSpec::default()
        },
        ImageSpec {
            reference: "b".into(),
            extra_layers: vec![extra("b")],
            ..ImageSpec::default()
        },
    ];
    write_images(&archive, ArchiveFormat::OciArchive, &specs).unwrap();
    let images = store.import(&archive).unwrap();
    let (a, b) = (&images[0], &images[1]);
    assert_eq!(a.layers[0].dir, b.layers[0].dir);
    assert!(matches!(
        store.remove("nope:1"),
        Err(ImageError::NotFound(_))
    ));

    store.remove("a").unwrap();
    assert!(store.resolve("a").unwrap().is_none());
    assert!(store.get(&a.id).unwrap().is_none());
    assert!(b.layer_dirs.iter().all(|d| d.is_dir()), "b's layers stay");
    assert!(!a.layer_dirs[1].exists(), "a's own layer went");
    assert!(!store.blob_path(&a.id).unwrap().exists());
    assert!(!store.blob_path(&a.layers[1].digest).unwrap().exists());
    assert!(
        store.blob_path(&a.layers[0].digest).unwrap().exists(),
        "the shared blob stays"
    );
    let c = tmp.path().join("c");
    let _g = MountGuard(c.clone());
    let rootfs = store.mount_rootfs(b, &c).unwrap();
    assert_eq!(fs::read_to_string(rootfs.join("b")).unwrap(), "b");
    ImageStore::unmount_rootfs(&c).unwrap();

    store.remove(&b.id[7..19]).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_store_empty(store.root());
}

/// An OCI layout written by hand, for archives the fixtures never write.
struct Handmade {
    dir: PathBuf,
}

impl Handmade {
    fn blob(&self, data: &[u8]) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), data).unwrap();
        digest
    }

    /// `layers`: uncompressed tars; `diff_ids`: the config's (default: the real ones).
    fn new(dir: PathBuf, layers: &[Vec<u8>], diff_ids: Option<Vec<String>>) -> Handmade {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let h = Handmade { dir };
        let mut descs = Vec::new();
        let mut real = Vec::new();
        for l in layers {
            real.push(digest_of(l));
            descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": h.blob(l), "size": l.len()}));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": rootfs_fixtures::image::go_arch(), "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids.unwrap_or(real)},
        }))
        .unwrap();
        let config_digest = h.blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let md = h.blob(&manifest);
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
            "annotations": {"io.containerd.image.name": "example.com/hand/made:v1", "org.opencontainers.image.ref.name": "v1"},
        }]});
        fs::write(
            h.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        fs::write(
            h.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        h
    }
}

fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn handmade_layout_with_containerd_name() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let h = Handmade::new(
        tmp.path().join("layout"),
        &[raw_tar(&[("hello", b"hi")])],
        None,
    );
    let image = store.import(&h.dir).unwrap().remove(0);
    assert_eq!(
        image.repo_tags,
        ["example.com/hand/made:v1"],
        "io.containerd.image.name wins"
    );
    assert!(image.config.config().is_none());
}

#[test]
fn multi_platform_index_picks_this_machine() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let h = Handmade::new(
        tmp.path().join("layout"),
        &[raw_tar(&[("hello", b"hi")])],
        None,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(h.dir.join("index.json")).unwrap()).unwrap();
    let mut ours = index["manifests"][0].clone();
    ours.as_object_mut().unwrap().remove("annotations");
    ours["platform"] = json!({"os": "linux", "architecture": rootfs_fixtures::image::go_arch()});
    let other_arch = if rootfs_fixtures::image::go_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            // Neither blob of these is in the layout: they must not be read.
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 10,
             "digest": format!("sha256:{}", "a".repeat(64)),
             "platform": {"os": "linux", "architecture": other_arch}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 10,
             "digest": format!("sha256:{}", "b".repeat(64)),
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            ours,
        ],
    }))
    .unwrap();
    let nested_digest = h.blob(&nested);
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": nested_digest, "size": nested.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi:arch"},
    }]});
    fs::write(h.dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let image = store.import(&h.dir).unwrap().remove(0);
    assert_eq!(image.repo_tags, ["docker.io/library/multi:arch"]);
    assert_eq!(image.layers.len(), 1);
}

#[test]
fn docker_archive_with_symlinked_layers() {
    require_root();
    // docker 25+ writes blobs/sha256/<hex> and links <id>/layer.tar to them.
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let layer = raw_tar(&[("etc/linked", b"yes")]);
    let layer_hex = hex::encode(Sha256::digest(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": rootfs_fixtures::image::go_arch(), "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
    }))
    .unwrap();
    let config_hex = hex::encode(Sha256::digest(&config));
    let manifest = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": ["linked:1"],
        "Layers": ["0123/layer.tar"],
    }]))
    .unwrap();
    let path = tmp.path().join("docker25.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&format!("blobs/sha256/{layer_hex}"), &layer);
    add(&format!("blobs/sha256/{config_hex}"), &config);
    add("manifest.json", &manifest);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(
        &mut h,
        "0123/layer.tar",
        format!("../blobs/sha256/{layer_hex}"),
    )
    .unwrap();
    b.finish().unwrap();
    drop(b);
    let image = store.import(&path).unwrap().remove(0);
    assert_eq!(image.id, format!("sha256:{config_hex}"));
    assert_eq!(image.repo_tags, ["docker.io/library/linked:1"]);
    assert_eq!(image.size, (layer.len() + config.len()) as u64);
    assert_eq!(
        fs::read(image.layer_dirs[0].join("etc/linked")).unwrap(),
        b"yes"
    );
    // The made manifest is stored, and its digest is the repo digest.
    assert!(store.blob_path(&image.manifest_digest).unwrap().is_file());
    assert_eq!(
        image.repo_digests,
        [format!(
            "docker.io/library/linked@{}",
            image.manifest_digest
        )]
    );
}

#[test]
fn bad_archives_are_refused_and_leave_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let check = |path: &Path, want: &str| {
        let err = store.import(path).expect_err(&path.display().to_string());
        let msg = err.to_string();
        assert!(msg.contains(want), "{}: {msg}", path.display());
        assert!(
            msg.contains(&path.display().to_string()),
            "the message names the archive: {msg}"
        );
        assert_store_empty(store.root());
    };

    // A corrupted layer blob in a layout dir.
    let layout = tmp.path().join("corrupt");
    let written = write_images(
        &layout,
        ArchiveFormat::OciLayoutDir,
        &[layered("x", ArchiveFormat::OciLayoutDir, Compression::Gzip)],
    )
    .unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(&written[0].layer_digests[2][7..]);
    let mut data = fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&blob, &data).unwrap();
    check(&layout, "digest mismatch");

    // A docker archive whose layer is not what the config's diff id says.
    let docker = tmp.path().join("docker.tar");
    write_image(
        &docker,
        &ImageSpec {
            format: ArchiveFormat::DockerArchive,
            compression: Compression::None,
            ..layered("y", ArchiveFormat::DockerArchive, Compression::None)
        },
    )
    .unwrap();
    let tampered = tmp.path().join("tampered.tar");
    {
        let mut out = tar::Builder::new(fs::File::create(&tampered).unwrap());
        let mut a = tar::Archive::new(fs::File::open(&docker).unwrap());
        let mut replaced = false;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let path = e.path().unwrap().into_owned();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut body).unwrap();
            if path.ends_with("layer.tar") && !replaced && body.len() < 100_000 {
                body = raw_tar(&[("etc/layer2.txt", b"evil")]);
                replaced = true;
            }
            h.set_size(body.len() as u64);
            h.set_cksum();
            out.append(&h, body.as_slice()).unwrap();
        }
        assert!(replaced);
        out.finish().unwrap();
    }
    check(&tampered, "digest mismatch");

    // A layer that tries to get out.
    let escape = Handmade::new(
        tmp.path().join("escape"),
        &[raw_tar(&[("ok", b"1"), ("../../escaped", b"x")])],
        None,
    );
    check(&escape.dir, "\"..\"");
    assert!(!tmp.path().join("escaped").exists() && !tmp.path().join("s/escaped").exists());

    // The config's diff id is not the layer's.
    let wrong = Handmade::new(
        tmp.path().join("wrong"),
        &[raw_tar(&[("a", b"1")])],
        Some(vec![format!("sha256:{}", "0".repeat(64))]),
    );
    check(&wrong.dir, "digest mismatch");

    // Not an archive; an empty file; a tar of something else; a missing file.
    let junk = tmp.path().join("junk");
    fs::write(
        &junk,
        b"this is not a tar archive at all, not even close.............",
    )
    .unwrap();
    check(&junk, "");
    let empty = tmp.path().join("empty.tar");
    fs::write(&empty, b"").unwrap();
    check(&empty, "");
    let other = tmp.path().join("other.tar");
    fs::write(&other, raw_tar(&[("README", b"hello")])).unwrap();
    check(&other, "neither an OCI image layout");
    assert!(matches!(
        store.import(&tmp.path().join("missing.tar")),
        Err(ImageError::Io { .. })
    ));

    // A gzip-compressed archive of a good image is fine.
    let good = tmp.path().join("good.tar");
    write_image(&good, &ImageSpec::default()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &fs::read(&good).unwrap()).unwrap();
    let gz_path = tmp.path().join("good.tar.gz");
    fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    assert_eq!(store.import(&gz_path).unwrap().len(), 1);
    assert!(dir_names(&store.root().join("tmp")).is_empty());
}

#[test]
fn concurrent_imports_from_threads() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let archives: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = tmp.path().join(format!("{i}.tar"));
            write_image(
                &p,
                &ImageSpec {
                    reference: format!("c{i}"),
                    cmd: vec![format!("{i}")],
                    ..ImageSpec::default()
                },
            )
            .unwrap();
            p
        })
        .collect();
    std::thread::scope(|s| {
        for a in &archives {
            let store = store.clone();
            s.spawn(move || store.import(a).unwrap());
        }
    });
    let images = store.list().unwrap();
    assert_eq!(images.len(), 3);
    assert!(images
        .iter()
        .all(|i| i.layers[0].dir == images[0].layers[0].dir));
    assert!(dir_names(&store.root().join("tmp")).is_empty());
    let usage = store.usage().unwrap();
    assert_eq!(usage.root, store.root());
    assert!(
        usage.used_bytes > 1_000_000 && usage.inodes_used > 100,
        "{usage:?}"
    );
}

#[test]
fn resolve_rules() {
    let image = |id: &str, tags: &[&str]| super::Image {
        id: format!("sha256:{id}"),
        repo_tags: tags.iter().map(|t| t.to_string()).collect(),
        repo_digests: vec![],
        size: 1,
        config: Default::default(),
        manifest_digest: String::new(),
        layers: vec![],
        layer_dirs: vec![],
        imported_at_nanos: 0,
    };
    let a = format!("abcdef012345{}", "0".repeat(52));
    let b = format!("abcdef012346{}", "1".repeat(52));
    let images = vec![image(&a, &["docker.io/library/x:latest"]), image(&b, &[])];
    let find = |r: &str| resolve_in(images.clone(), r);
    assert_eq!(find("x").unwrap().unwrap().id[7..], a);
    assert_eq!(find("abcdef012346").unwrap().unwrap().id[7..], b);
    assert!(
        matches!(find("abcdef01234"), Ok(None)),
        "11 hex digits is a name, not an id prefix"
    );
    assert!(matches!(
        find("sha256:abcdef01234"),
        Err(ImageError::InvalidReference { .. })
    ));
    assert!(matches!(find(&format!("sha256:{}", &a[..12])), Ok(Some(_))));
    assert!(matches!(find("y"), Ok(None)));
    assert!(matches!(
        find("Bad!"),
        Err(ImageError::InvalidReference { .. })
    ));
    // Ambiguous: an image whose id shares the 12-digit prefix.
    let c = format!("abcdef012345{}", "2".repeat(52));
    let mut more = images.clone();
    more.push(image(&c, &[]));
    assert!(matches!(
        resolve_in(more, "abcdef012345"),
        Err(ImageError::Ambiguous { .. })
    ));
}

#[test]
fn the_store_is_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ImageStore>();
    send_sync::<super::Image>();
}

#[test]
fn store_root_must_suit_overlay_options() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ImageStore::open(&tmp.path().join("a:b")).unwrap_err();
    assert!(err.to_string().contains("overlay"), "{err}");
}

#[test]
fn another_process_holding_the_lock_holds_up_commits_but_not_reads() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s");
    let store = ImageStore::open(&root).unwrap();
    let archive = tmp.path().join("bb.tar");
    write_image(&archive, &ImageSpec::default()).unwrap();
    // Another process (flock(1)) takes the store's lock, as `rrun-cri image import` would.
    let ready = tmp.path().join("ready");
    let mut holder = Command::new("flock")
        .arg(root.join("lock"))
        .args(["sh", "-c"])
        .arg(format!("touch {}; sleep 2", ready.display()))
        .spawn()
        .unwrap();
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Reap(&mut holder);
    while !ready.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let start = std::time::Instant::now();
    let imported = std::thread::scope(|s| {
        let t = s.spawn(|| store.import(&archive).unwrap());
        // Reads go on meanwhile.
        assert!(store.list().unwrap().is_empty());
        t.join().unwrap()
    });
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(1500),
        "the import waited for the lock"
    );
    drop(holder);
    // A second handle on the same root (as a second process has) sees what the first did.
    let other = ImageStore::open(&root).unwrap();
    assert_eq!(
        other.resolve("busybox").unwrap().unwrap().id,
        imported[0].id
    );
    other.remove("busybox").unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn mutated_archives_never_panic_and_leave_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s")).unwrap();
    let h = Handmade::new(
        tmp.path().join("layout"),
        &[
            raw_tar(&[("a", b"1")]),
            raw_tar(&[(".wh.a", b""), ("b/c", b"2")]),
        ],
        None,
    );
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &h.dir).unwrap();
    let original = b.into_inner().unwrap();
    let path = tmp.path().join("m.tar");
    // A fixed linear congruential sequence: the same mutations on every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut imported = 0;
    for _ in 0..300 {
        let mut data = original.clone();
        for _ in 0..1 + next() % 3 {
            let at = next() % data.len();
            data[at] = (next() % 256) as u8;
        }
        if next() % 8 == 0 {
            data.truncate(next() % data.len());
        }
        fs::write(&path, &data).unwrap();
        if let Ok(images) = store.import(&path) {
            imported += 1;
            for i in images {
                store.remove(&i.id).unwrap();
            }
        }
    }
    assert!(imported > 0, "some mutations hit padding and still import");
    assert_store_empty(store.root());
}
