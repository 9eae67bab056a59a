//! `rrun-cri image pull | rm | inspect`: the image store for people, on the same store as a
//! running server (its flock and atomic records make that safe; see the module docs).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::pull::{LayerProgress, ProgressFn, Puller};
use super::{ImageStore, RegistryConfig};

/// One layer's line of the display.
#[derive(Clone, Default)]
struct Row {
    digest: String,
    done: u64,
    total: u64,
    started: Option<Instant>,
    printed_done: bool,
}

fn mib(n: u64) -> f64 {
    n as f64 / (1u64 << 20) as f64
}

fn line(index: usize, r: &Row) -> String {
    let short = r.digest.trim_start_matches("sha256:");
    let short = &short[..short.len().min(12)];
    let secs = r.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    let rate = if secs > 0.0 {
        r.done as f64 / secs
    } else {
        0.0
    };
    if r.done >= r.total {
        return format!("layer {index} {short}: done {:.1} MiB", mib(r.total));
    }
    let eta = if rate > 0.0 {
        format!("{:.0}s", (r.total - r.done) as f64 / rate)
    } else {
        "?".into()
    };
    format!(
        "layer {index} {short}: {:.1}/{:.1} MiB {:.1} MiB/s ETA {eta}",
        mib(r.done),
        mib(r.total),
        rate / (1u64 << 20) as f64
    )
}

/// Prints the rows: redrawn in place on a terminal, else a line per layer per tick and one
/// when it completes.
fn render(rows: &mut [Row], tty: bool, drawn: &mut usize) {
    let mut out = std::io::stdout().lock();
    if tty {
        if *drawn > 0 {
            let _ = write!(out, "\x1b[{}A", *drawn);
        }
        for (i, r) in rows.iter().enumerate() {
            let _ = writeln!(out, "\x1b[2K{}", line(i, r));
        }
        *drawn = rows.len();
    } else {
        for (i, r) in rows.iter_mut().enumerate() {
            if r.printed_done || r.total == 0 {
                continue;
            }
            let _ = writeln!(out, "{}", line(i, r));
            r.printed_done = r.done >= r.total;
        }
    }
    let _ = out.flush();
}

/// `USER[:PASS]`; without `:PASS`, the password is the first line of stdin (so that it
/// need not be in the command line, which `ps` shows).
fn credentials(creds: &str) -> anyhow::Result<cri_proto::api::AuthConfig> {
    let (user, pass) = match creds.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => {
            let mut p = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut p)
                .context("reading the password from stdin")?;
            (
                creds.to_string(),
                p.trim_end_matches(['\r', '\n']).to_string(),
            )
        }
    };
    if user.is_empty() {
        bail!("--creds: the user name is empty");
    }
    Ok(cri_proto::api::AuthConfig {
        username: user,
        password: pass,
        ..Default::default()
    })
}

/// `image pull [--creds USER[:PASS]] REF`.
pub fn pull(
    store: &ImageStore,
    config: &RegistryConfig,
    reference: &str,
    creds: Option<&str>,
) -> anyhow::Result<()> {
    let auth = creds.map(credentials).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let puller = Puller::new(store.clone(), config.clone());
    let rows: Arc<Mutex<Vec<Row>>> = Arc::default();
    let progress: ProgressFn = {
        let rows = rows.clone();
        Arc::new(move |p: &LayerProgress| {
            let mut rows = rows.lock().unwrap_or_else(|e| e.into_inner());
            if rows.len() <= p.index {
                rows.resize(p.index + 1, Row::default());
            }
            let r = &mut rows[p.index];
            r.digest.clone_from(&p.digest);
            r.total = p.total;
            r.done = p.done;
            r.started.get_or_insert_with(Instant::now);
        })
    };
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let image = rt.block_on(async {
        let pull = puller.pull(reference, auth.as_ref(), Some(progress));
        tokio::pin!(pull);
        let mut tick = tokio::time::interval(Duration::from_millis(if tty { 200 } else { 1000 }));
        let mut drawn = 0;
        loop {
            tokio::select! {
                r = &mut pull => {
                    let mut rows = rows.lock().unwrap_or_else(|e| e.into_inner());
                    render(&mut rows, tty, &mut drawn);
                    break r;
                }
                _ = tick.tick() => {
                    let mut rows = rows.lock().unwrap_or_else(|e| e.into_inner());
                    render(&mut rows, tty, &mut drawn);
                }
            }
        }
    })?;
    println!(
        "{} {} ({:.1} MiB in {:.1}s)",
        image.id,
        reference,
        mib(image.size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `image rm REF`: refused while a container record of the server names the image.
pub fn remove(store: &ImageStore, root: &Path, reference: &str) -> anyhow::Result<()> {
    let image = store
        .resolve(reference)?
        .with_context(|| format!("image {reference:?} not found"))?;
    let records = crate::records::Store::open(root)
        .and_then(|s| s.load_containers())
        .with_context(|| format!("reading the container records under {}", root.display()))?;
    let users: Vec<String> = records
        .records
        .iter()
        .filter(|c| c.image_id == image.id)
        .map(|c| c.id.clone())
        .collect();
    if !users.is_empty() {
        bail!(
            "image {reference:?} ({}) is in use by container(s) {}: remove them first",
            image.id,
            users.join(", ")
        );
    }
    store.remove(&image.id)?;
    println!("{}", image.id);
    Ok(())
}

/// `image inspect REF`: the record as JSON (config, layers, names).
pub fn inspect(store: &ImageStore, reference: &str) -> anyhow::Result<()> {
    let image = store
        .resolve(reference)?
        .with_context(|| format!("image {reference:?} not found"))?;
    println!("{}", serde_json::to_string_pretty(&image)?);
    Ok(())
}
