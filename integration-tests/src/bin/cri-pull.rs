//! `cri-pull SOCKET IMAGE`: one CRI PullImage (then, with `--remove`, RemoveImage) on a
//! CRI socket; prints the pull's wall time in seconds and the image_ref. For
//! `bench/pull.sh`, which compares servers on the same registry.

use std::process::ExitCode;
use std::time::Instant;

use cri_proto::{api, Client};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(socket), Some(image)) = (args.first(), args.get(1)) else {
        eprintln!("usage: cri-pull SOCKET IMAGE [--remove]");
        return ExitCode::from(2);
    };
    let remove = args.iter().any(|a| a == "--remove");
    let client = match Client::connect(std::path::Path::new(socket)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-pull: connecting to {socket}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut images = client.image.clone();
    let t = Instant::now();
    let r = images
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await;
    let secs = t.elapsed().as_secs_f64();
    let image_ref = match r {
        Ok(r) => r.into_inner().image_ref,
        Err(s) => {
            eprintln!(
                "cri-pull: PullImage {image}: {:?}: {}",
                s.code(),
                s.message()
            );
            return ExitCode::FAILURE;
        }
    };
    println!("{secs:.4} {image_ref}");
    if remove {
        if let Err(s) = images
            .remove_image(api::RemoveImageRequest {
                image: Some(api::ImageSpec {
                    image: image_ref,
                    ..Default::default()
                }),
            })
            .await
        {
            eprintln!("cri-pull: RemoveImage: {:?}: {}", s.code(), s.message());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
