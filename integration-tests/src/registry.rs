//! A real registry for the pull tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on 127.0.0.1 with its own config and storage in a temp dir, filled with
//! `skopeo` from OCI layouts that `rootfs_fixtures::image` writes, stopped on drop.
//!
//! Its access log (one line per request, on its stderr) is kept, so that a test can count
//! the blob downloads a pull made.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rootfs_fixtures::image::{write_images, ArchiveFormat, ImageSpec, WrittenImage};

use crate::scaled;

/// The tools a registry test needs; in CI (`CI` set) a missing one fails the test.
pub fn tools_present() -> bool {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "htpasswd", "openssl"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "missing {missing:?} (scripts/setup.sh installs them)"
    );
    eprintln!("skipping: missing {missing:?} (scripts/setup.sh installs them)");
    false
}

/// How to start a [`Registry`].
#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// htpasswd (bcrypt) authentication with this user and password.
    pub credentials: Option<(String, String)>,
    /// TLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Token authentication: the token service's realm and the certificate of the key that
    /// signs its tokens (see `registry_fakes::TokenService`); `credentials` are then what
    /// skopeo pushes with.
    pub token: Option<(String, PathBuf)>,
    /// With `tls`: clients must show a certificate signed by this CA (`http.tls.clientcas`).
    pub client_ca: Option<PathBuf>,
    /// The API under this path (`http.prefix`, e.g. `/mirror/`: the API at `/mirror/v2/`).
    pub prefix: Option<String>,
    /// Serve this storage directory (another registry's: filled by pushes to that one)
    /// instead of a storage of its own.
    pub storage: Option<PathBuf>,
    /// The registry (and the skopeo that fills it) run after this prefix, e.g. a node's
    /// `nsenter --target PID --net --mount --`: 127.0.0.1 is then that namespace's loopback.
    pub wrap: Vec<String>,
}

pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    options: RegistryOptions,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    /// Starts a registry and waits until it accepts connections.
    pub fn start(options: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("rrun-registry-")
            .tempdir()
            .expect("registry temp dir");
        let log = dir.path().join("registry.log");
        let mut reg = Registry {
            port: 0,
            dir,
            child: None,
            log,
            options,
        };
        // A port picked free can be taken by another process before the registry binds it:
        // then pick another (the registry exits at once with "address already in use").
        for _ in 0..5 {
            reg.port = free_port();
            reg.spawn();
            if reg.wait_ready() {
                return reg;
            }
        }
        panic!("docker-registry did not start:\n{}", reg.log_text());
    }

    fn spawn(&mut self) {
        let base = self.dir.path();
        let storage = self
            .options
            .storage
            .clone()
            .unwrap_or_else(|| base.join("storage"));
        fs::create_dir_all(&storage).expect("registry storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{}\n",
            storage.display(),
            self.port
        );
        if let Some(prefix) = &self.options.prefix {
            config.push_str(&format!("  prefix: {prefix}\n"));
        }
        if let Some((cert, key)) = &self.options.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            if let Some(ca) = &self.options.client_ca {
                config.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        if let Some((realm, cert)) = &self.options.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                crate::registry_fakes::SERVICE,
                crate::registry_fakes::ISSUER,
                cert.display()
            ));
        } else if let Some((user, pass)) = &self.options.credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("running htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let path = base.join("htpasswd");
            fs::write(&path, &out.stdout).expect("writing htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rrun-test\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = base.join("config.yml");
        fs::write(&config_path, config).expect("writing the registry config");
        let log = fs::File::create(&self.log).expect("registry log");
        let child = self
            .wrapped("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        self.child = Some(child);
    }

    /// `prog` after the options' `wrap` prefix.
    fn wrapped(&self, prog: &str) -> Command {
        match self.options.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(prog);
                c
            }
            None => Command::new(prog),
        }
    }

    /// Whether the registry listens: a connection from here, or (wrapped: another network
    /// namespace, which this process cannot connect into) its "listening on" log line.
    fn listens(&self) -> bool {
        if self.options.wrap.is_empty() {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        } else {
            self.log_text()
                .contains(&format!("listening on 127.0.0.1:{}", self.port))
        }
    }

    /// Waits until the port accepts connections, or the registry exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if self.listens() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The registry process's pid.
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("the registry runs")
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the registry keeps what is pushed to it.
    pub fn storage(&self) -> PathBuf {
        self.options
            .storage
            .clone()
            .unwrap_or_else(|| self.dir.path().join("storage"))
    }

    /// The registry's log so far (its access log included).
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many GET requests for the blob `digest` of `repo` the registry served.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest}");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// The file holding the blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Copies the image named `name` in the OCI layout `layout` to `repo:tag` (all the
    /// manifests of an index with `all`), keeping its digests.
    pub fn push_layout(&self, layout: &Path, name: &str, repo_tag: &str, all: bool) {
        let mut cmd = self.wrapped("skopeo");
        cmd.args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"]);
        if all {
            cmd.arg("--all");
        }
        if let Some((user, pass)) = &self.options.credentials {
            cmd.arg("--dest-creds").arg(format!("{user}:{pass}"));
        }
        // Plain HTTP, or the test's own CA, which skopeo need not know.
        cmd.arg("--dest-tls-verify=false");
        cmd.arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        let out = cmd.output().expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {repo_tag} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes `spec` as an OCI layout and pushes it to `repo:tag`.
    pub fn push(&self, spec: &ImageSpec, repo_tag: &str) -> WrittenImage {
        let layout = self.layout_dir();
        let mut spec = spec.clone();
        spec.reference = "img".into();
        let written = write_images(&layout, ArchiveFormat::OciLayoutDir, &[spec])
            .unwrap_or_else(|e| panic!("writing an OCI layout: {e:#}"));
        self.push_layout(&layout, "img", repo_tag, false);
        let _ = fs::remove_dir_all(&layout);
        written.into_iter().next().expect("one image written")
    }

    /// A fresh directory for an OCI layout.
    pub fn layout_dir(&self) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.dir.path().join(format!("layout-{n}"))
    }

    /// Stops the registry (SIGKILL: it keeps nothing in memory worth flushing).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The response sizes of the GETs of blob `digest` in a registry log, in order.
pub fn blob_get_sizes(log: &str, repo: &str, digest: &str) -> Vec<u64> {
    let needle = format!("\"GET /v2/{repo}/blobs/{digest}");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            // `"GET ... HTTP/1.1" 206 12345 ...`
            let after = l.split("HTTP/1.1\" ").nth(1)?;
            after.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}
