//! A container's image through the CRI's ImageService, per its imagePullPolicy (the
//! kubelet's default: Always for :latest or no tag, else IfNotPresent), with the pod's pull
//! secrets and the pull back-off (ErrImagePull, then ImagePullBackOff).

use cri_proto::api;
use k8s_openapi::api::core::v1::Container;

use crate::cri::req;
use crate::manifest::Desired;
use crate::state::{Shared, Waiting};

/// The API server's default when a container names no imagePullPolicy.
pub(crate) fn default_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// Makes sure the image is there, per the pull policy; its id, or the waiting reason.
pub async fn ensure_image(
    shared: &Shared,
    d: &Desired,
    c: &Container,
    sb_cfg: &api::PodSandboxConfig,
    client: &mut cri_proto::Client,
) -> Result<String, Waiting> {
    let image = c.image.clone().unwrap_or_default();
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| default_pull_policy(&image).to_string());
    let spec_ = api::ImageSpec {
        image: image.clone(),
        ..Default::default()
    };
    let present = client
        .image
        .image_status(req(api::ImageStatusRequest {
            image: Some(spec_.clone()),
            verbose: false,
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().image)
        .map(|i| i.id);
    match (policy.as_str(), present) {
        ("Never", None) => {
            return Err(Waiting {
                reason: "ErrImageNeverPull".into(),
                message: format!(
                    "Container image \"{image}\" is not present with pull policy of Never"
                ),
            })
        }
        ("Never" | "IfNotPresent", Some(id)) => return Ok(id),
        _ => {}
    }
    let key = (d.uid.clone(), image.clone());
    if let Some((at, delay)) = shared.lock().pull_backoff.get(&key).copied() {
        if at.elapsed() < delay {
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message: format!("Back-off pulling image \"{image}\""),
            });
        }
    }
    shared.event(
        &d.pod,
        &d.uid,
        "Normal",
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let objects = shared.lock().objects.clone();
    let auth = crate::pull_secrets::auth_for(&d.pod, &objects, &image);
    let r = client
        .image
        .pull_image(req(api::PullImageRequest {
            image: Some(spec_),
            auth,
            sandbox_config: Some(sb_cfg.clone()),
        }))
        .await;
    match r {
        Ok(r) => {
            shared.lock().pull_backoff.remove(&key);
            shared.event(
                &d.pod,
                &d.uid,
                "Normal",
                "Pulled",
                format!("Successfully pulled image \"{image}\""),
            );
            Ok(r.into_inner().image_ref)
        }
        Err(e) => {
            let (base, cap) = (shared.config.backoff_base, shared.config.backoff_cap);
            let mut g = shared.lock();
            let next = match g.pull_backoff.get(&key) {
                Some((_, d)) => (*d * 2).min(cap),
                None => base,
            };
            g.pull_backoff
                .insert(key, (std::time::Instant::now(), next));
            drop(g);
            let msg = format!("Failed to pull image \"{image}\": {}", e.message());
            shared.event(&d.pod, &d.uid, "Warning", "Failed", msg.clone());
            Err(Waiting {
                reason: "ErrImagePull".into(),
                message: msg,
            })
        }
    }
}
