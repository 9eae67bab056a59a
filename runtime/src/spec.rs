//! Loading and checking a bundle's `config.json`; the default spec of `rrun spec`; the
//! `rrun features` document.
//!
//! PLACEHOLDER CONTRACT (being filled in):
//! - `pub fn load_bundle(bundle: &Path) -> Result<Spec, SpecError>`: read `bundle/config.json`,
//!   parse it with oci-spec and `validate` it.
//! - `pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError>`
//! - `pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf`: root.path made absolute against the bundle.
//! - `pub fn default_spec() -> Spec`: what `runc spec` writes (rootless: false).
//! - `pub fn features() -> oci_spec::runtime::Features`
