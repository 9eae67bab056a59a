//! grpc probes: the gRPC health checking protocol (`grpc.health.v1.Health/Check`) over
//! plain HTTP/2, as the kubelet's prober speaks it, with its messages.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One Check of `service` ("" = the server as a whole) at `host:port`.
pub(super) async fn check(
    host: &str,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let within = format!("{}s", timeout.as_secs());
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("invalid grpc probe address {addr:?}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        _ => {
            return Err(format!(
                "timeout: failed to connect service {addr:?} within {within}"
            ))
        }
    };
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let answer = tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await;
    match answer {
        Err(_) => Err(format!("timeout: health rpc did not complete within {within}")),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Err(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            s.message()
        )),
        Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded => {
            Err(format!("timeout: health rpc did not complete within {within}"))
        }
        Ok(Err(s)) => Err(format!(
            "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
            s.code(),
            s.message()
        )),
        Ok(Ok(r)) => match r.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!(
                "service unhealthy (responded with {:?})",
                other.as_str_name()
            )),
        },
    }
}
