//! The CRI ImageService over the local image store.

use cri_proto::api;
use tonic::{Request, Response, Status};

use crate::error::Error;

use super::{blocking, internal, Cri};
use crate::image::{Image, PullError};

type Reply<T> = Result<Response<T>, Status>;

/// The image as the CRI lists it; the user is split the way the kubelet reads it (a uid, or
/// a name it cannot check against runAsNonRoot).
fn cri_image(img: &Image) -> api::Image {
    let user = img
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let user = user.split(':').next().unwrap_or("").to_string();
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(api::Int64Value { value: uid }), String::new()),
        Err(_) if user.is_empty() => (Some(api::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user),
    };
    api::Image {
        id: img.id.clone(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size,
        uid,
        username,
        spec: Some(api::ImageSpec {
            image: img.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The gRPC status of a failed pull.
fn image_ref(spec: Option<api::ImageSpec>) -> Result<String, Error> {
    let name = spec.map(|s| s.image).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::invalid_argument("ImageSpec.image is required"));
    }
    Ok(name)
}

#[tonic::async_trait]
impl cri_proto::ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> Reply<api::ListImagesResponse> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let me = self.clone();
        let images = blocking(move || {
            let all = me.images().list().map_err(internal)?;
            let wanted = match &filter {
                Some(r) => me.images().resolve(r).map_err(internal)?.map(|i| i.id),
                None => None,
            };
            Ok(all
                .iter()
                .filter(|i| filter.is_none() || wanted.as_deref() == Some(i.id.as_str()))
                .map(cri_image)
                .collect())
        })
        .await?;
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<api::ImageStatusRequest>,
    ) -> Reply<api::ImageStatusResponse> {
        let req = req.into_inner();
        let name = image_ref(req.image)?;
        let me = self.clone();
        let found = blocking(move || me.images().resolve(&name).map_err(internal)).await?;
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            if let Some(img) = &found {
                let doc = serde_json::json!({
                    "imageSpec": img.config,
                    "manifestDigest": img.manifest_digest,
                });
                info.insert("info".to_string(), doc.to_string());
            }
        }
        // A missing image is an empty answer, not an error (the kubelet then pulls).
        Ok(Response::new(api::ImageStatusResponse {
            image: found.as_ref().map(cri_image),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<api::PullImageRequest>,
    ) -> Reply<api::PullImageResponse> {
        let req = req.into_inner();
        let name = image_ref(req.image)?;
        // PullImage always asks the registry (the kubelet's pull policy decides whether to
        // call it), as containerd does.
        match self.puller().pull(&name, req.auth.as_ref(), None).await {
            Ok(image) => Ok(Response::new(api::PullImageResponse {
                image_ref: image.id,
            })),
            // An image imported by hand (an offline node, a test) has no registry to answer:
            // the stored image is the answer when the registry cannot be reached at all.
            Err(e @ PullError::Unavailable(_)) => {
                let me = self.clone();
                let lookup = name.clone();
                let found =
                    blocking(move || me.images().resolve(&lookup).map_err(internal)).await?;
                match found {
                    Some(img) => {
                        tracing::warn!(image = %name, error = %e, "registry unreachable; answering the stored image");
                        Ok(Response::new(api::PullImageResponse { image_ref: img.id }))
                    }
                    None => Err(crate::error::pull_error(&name, e).into()),
                }
            }
            Err(e) => Err(crate::error::pull_error(&name, e).into()),
        }
    }

    async fn remove_image(
        &self,
        req: Request<api::RemoveImageRequest>,
    ) -> Reply<api::RemoveImageResponse> {
        let name = image_ref(req.into_inner().image)?;
        let me = self.clone();
        blocking(move || {
            // Removing an image that is not there is not an error (CRI: idempotent).
            let Some(img) = me.images().resolve(&name).map_err(internal)? else {
                return Ok(());
            };
            let users = me.image_users(&img.id);
            if !users.is_empty() {
                return Err(Error::failed_precondition(format!(
                    "image {name:?} ({}) is in use by container(s) {}: remove them first",
                    img.id,
                    users.join(", ")
                )));
            }
            me.images().remove(&img.id).map_err(internal)
        })
        .await?;
        Ok(Response::new(api::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<api::ImageFsInfoRequest>,
    ) -> Reply<api::ImageFsInfoResponse> {
        super::fault_point("image-fs-info");
        let me = self.clone();
        let usage = blocking(move || me.images().usage().map_err(internal)).await?;
        let fs = api::FilesystemUsage {
            timestamp: crate::records::now_ns(),
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: usage.root.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(api::UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(api::UInt64Value {
                value: usage.inodes_used,
            }),
        };
        Ok(Response::new(api::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}
