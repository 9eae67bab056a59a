//! The CRI RuntimeService over [`Cri`]: request checking and response shapes; the work is
//! in the server's methods.

use std::pin::Pin;

use cri_proto::api;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::error::{Error, ErrorKind};

use super::Cri;

type Reply<T> = Result<Response<T>, Status>;

fn required<'a>(value: &'a str, name: &str) -> Result<&'a str, Error> {
    if value.is_empty() {
        Err(Error::invalid_argument(format!("{name} is required")))
    } else {
        Ok(value)
    }
}

#[tonic::async_trait]
impl cri_proto::RuntimeService for Cri {
    async fn version(&self, req: Request<api::VersionRequest>) -> Reply<api::VersionResponse> {
        Ok(Response::new(api::VersionResponse {
            version: cri_proto::KUBELET_API_VERSION.into(),
            runtime_name: "rrun".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: cri_proto::ApiVersion::of(&req).as_str().into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<api::RunPodSandboxRequest>,
    ) -> Reply<api::RunPodSandboxResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Error::invalid_argument("RunPodSandboxRequest.config is required"))?;
        let id = self.run_pod_sandbox(config, req.runtime_handler).await?;
        Ok(Response::new(api::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<api::StopPodSandboxRequest>,
    ) -> Reply<api::StopPodSandboxResponse> {
        let req = req.into_inner();
        self.stop_pod_sandbox(required(&req.pod_sandbox_id, "pod_sandbox_id")?)
            .await?;
        Ok(Response::new(api::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<api::RemovePodSandboxRequest>,
    ) -> Reply<api::RemovePodSandboxResponse> {
        let req = req.into_inner();
        self.remove_pod_sandbox(required(&req.pod_sandbox_id, "pod_sandbox_id")?)
            .await?;
        Ok(Response::new(api::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<api::PodSandboxStatusRequest>,
    ) -> Reply<api::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let status = self.pod_sandbox_status(required(&req.pod_sandbox_id, "pod_sandbox_id")?)?;
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            if let Ok(rec) = self.sandbox(&status.id) {
                let doc = serde_json::json!({
                    "namespaces": rec.namespaces,
                    "cgroupParent": rec.cgroup_parent,
                    "runtimeHandler": rec.runtime_handler,
                });
                info.insert("info".to_string(), doc.to_string());
            }
        }
        Ok(Response::new(api::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: vec![],
            timestamp: crate::records::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<api::ListPodSandboxRequest>,
    ) -> Reply<api::ListPodSandboxResponse> {
        Ok(Response::new(api::ListPodSandboxResponse {
            items: self.list_pod_sandbox(req.into_inner().filter),
        }))
    }

    async fn create_container(
        &self,
        req: Request<api::CreateContainerRequest>,
    ) -> Reply<api::CreateContainerResponse> {
        let req = req.into_inner();
        let pod = required(&req.pod_sandbox_id, "pod_sandbox_id")?.to_string();
        let config = req
            .config
            .ok_or_else(|| Error::invalid_argument("CreateContainerRequest.config is required"))?;
        let id = self.create_container(&pod, config).await?;
        Ok(Response::new(api::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<api::StartContainerRequest>,
    ) -> Reply<api::StartContainerResponse> {
        let req = req.into_inner();
        self.start_container(required(&req.container_id, "container_id")?)
            .await?;
        Ok(Response::new(api::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<api::StopContainerRequest>,
    ) -> Reply<api::StopContainerResponse> {
        let req = req.into_inner();
        let id = required(&req.container_id, "container_id")?;
        // Stopping a container that is gone is fine (CRI: idempotent); a malformed id is not.
        match self.container(id) {
            Ok(_) => self.stop_container(id, req.timeout).await?,
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
            Err(_) => {}
        }
        Ok(Response::new(api::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<api::RemoveContainerRequest>,
    ) -> Reply<api::RemoveContainerResponse> {
        let req = req.into_inner();
        self.remove_container(required(&req.container_id, "container_id")?)
            .await?;
        Ok(Response::new(api::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<api::ListContainersRequest>,
    ) -> Reply<api::ListContainersResponse> {
        let me = self.clone();
        let filter = req.into_inner().filter;
        let containers = super::blocking(move || Ok(me.list_containers(filter))).await?;
        Ok(Response::new(api::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<api::ContainerStatusRequest>,
    ) -> Reply<api::ContainerStatusResponse> {
        let req = req.into_inner();
        let id = required(&req.container_id, "container_id")?.to_string();
        let me = self.clone();
        let resp = super::blocking(move || me.container_status(&id, req.verbose)).await?;
        Ok(Response::new(resp))
    }

    async fn update_container_resources(
        &self,
        req: Request<api::UpdateContainerResourcesRequest>,
    ) -> Reply<api::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        self.update_container_resources(required(&req.container_id, "container_id")?, req.linux)
            .await?;
        Ok(Response::new(api::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<api::ReopenContainerLogRequest>,
    ) -> Reply<api::ReopenContainerLogResponse> {
        let req = req.into_inner();
        self.reopen_container_log(required(&req.container_id, "container_id")?)
            .await?;
        Ok(Response::new(api::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<api::ExecSyncRequest>) -> Reply<api::ExecSyncResponse> {
        let req = req.into_inner();
        let resp = self
            .exec_sync(
                required(&req.container_id, "container_id")?,
                req.cmd,
                req.timeout,
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn exec(&self, req: Request<api::ExecRequest>) -> Reply<api::ExecResponse> {
        let req = req.into_inner();
        required(&req.container_id, "container_id")?;
        let url = self.stream_url(crate::streaming::Request::Exec(req))?;
        Ok(Response::new(api::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<api::AttachRequest>) -> Reply<api::AttachResponse> {
        let req = req.into_inner();
        required(&req.container_id, "container_id")?;
        let url = self.stream_url(crate::streaming::Request::Attach(req))?;
        Ok(Response::new(api::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<api::PortForwardRequest>,
    ) -> Reply<api::PortForwardResponse> {
        let req = req.into_inner();
        required(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let url = self.stream_url(crate::streaming::Request::PortForward(req))?;
        Ok(Response::new(api::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<api::ContainerStatsRequest>,
    ) -> Reply<api::ContainerStatsResponse> {
        let id = required(&req.get_ref().container_id, "container_id")?.to_string();
        let me = self.clone();
        let stats = super::blocking(move || me.container_stats(&id)).await?;
        Ok(Response::new(api::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<api::ListContainerStatsRequest>,
    ) -> Reply<api::ListContainerStatsResponse> {
        let me = self.clone();
        let filter = req.into_inner().filter;
        let stats = super::blocking(move || Ok(me.list_container_stats(filter))).await?;
        Ok(Response::new(api::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<api::PodSandboxStatsRequest>,
    ) -> Reply<api::PodSandboxStatsResponse> {
        let id = required(&req.get_ref().pod_sandbox_id, "pod_sandbox_id")?.to_string();
        let me = self.clone();
        let stats = super::blocking(move || me.pod_sandbox_stats(&id)).await?;
        Ok(Response::new(api::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<api::ListPodSandboxStatsRequest>,
    ) -> Reply<api::ListPodSandboxStatsResponse> {
        let me = self.clone();
        let filter = req.into_inner().filter;
        let stats = super::blocking(move || Ok(me.list_pod_sandbox_stats(filter))).await?;
        Ok(Response::new(api::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        _: Request<api::UpdateRuntimeConfigRequest>,
    ) -> Reply<api::UpdateRuntimeConfigResponse> {
        // The pod CIDR is for the network plugin; without CNI there is nothing to update.
        Ok(Response::new(api::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, req: Request<api::StatusRequest>) -> Reply<api::StatusResponse> {
        let condition = |typ: &str| api::RuntimeCondition {
            r#type: typ.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let network_condition = match self.inner.network.status() {
            Ok(()) => condition("NetworkReady"),
            Err(message) => api::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: crate::network::NOT_READY_REASON.into(),
                message,
            },
        };
        let mut info = std::collections::HashMap::new();
        if req.get_ref().verbose {
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "root": self.inner.config.root,
                    "runtimeRoot": self.inner.config.runtime_root,
                    "cgroupDriver": "cgroupfs",
                    "network": self.inner.network.describe(),
                })
                .to_string(),
            );
        }
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus {
                conditions: vec![condition("RuntimeReady"), network_condition],
            }),
            info,
            runtime_handlers: vec![],
            features: None,
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<api::CheckpointContainerRequest>,
    ) -> Reply<api::CheckpointContainerResponse> {
        Err(Error::unimplemented("checkpointing is not supported").into())
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<api::ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _: Request<api::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        let rx = self.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| match e {
            Ok(ev) => Some(Ok(ev)),
            // A subscriber too slow to keep up loses events (the kubelet relists then).
            Err(_) => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<api::ListMetricDescriptorsRequest>,
    ) -> Reply<api::ListMetricDescriptorsResponse> {
        Ok(Response::new(api::ListMetricDescriptorsResponse {
            descriptors: vec![],
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<api::ListPodSandboxMetricsRequest>,
    ) -> Reply<api::ListPodSandboxMetricsResponse> {
        Ok(Response::new(api::ListPodSandboxMetricsResponse {
            pod_metrics: vec![],
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<api::RuntimeConfigRequest>,
    ) -> Reply<api::RuntimeConfigResponse> {
        Ok(Response::new(api::RuntimeConfigResponse {
            linux: Some(api::LinuxRuntimeConfiguration {
                cgroup_driver: api::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}
