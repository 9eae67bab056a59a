//! The five capability sets of the container's process.

use crate::error::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;
use std::str::FromStr;

/// The five capability sets, resolved against what this kernel knows.
#[derive(Debug, Default, Clone)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapabilitySets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = c else {
            return Ok(Self::default());
        };
        // What this kernel knows, read once (it is a /proc file).
        let supported = caps::runtime::procfs_all_supported(None).ok();
        let conv = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<CapsHashSet> {
            let mut out = CapsHashSet::new();
            for cap in set.iter().flatten() {
                let name = cap.to_string();
                let name = if name.starts_with("CAP_") {
                    name
                } else {
                    format!("CAP_{name}")
                };
                let parsed = Capability::from_str(&name)
                    .map_err(|_| Error::Invalid(format!("unknown capability {name}")))?;
                // A capability this kernel does not have cannot be granted: leave it out,
                // as runc does, rather than fail on a newer config.
                if supported.as_ref().is_none_or(|all| all.contains(&parsed)) {
                    out.insert(parsed);
                }
            }
            Ok(out)
        };
        Ok(CapabilitySets {
            bounding: conv(c.bounding())?,
            effective: conv(c.effective())?,
            permitted: conv(c.permitted())?,
            inheritable: conv(c.inheritable())?,
            ambient: conv(c.ambient())?,
        })
    }

    /// Drops from the bounding set what is not configured. Done while still holding
    /// CAP_SETPCAP, i.e. before switching user.
    pub fn drop_bounding(&self) -> Result<()> {
        for cap in caps::all() {
            if !self.bounding.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
            {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                    Error::Invalid(format!("dropping {cap} from the bounding set: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Sets the other four sets exactly. Done after the user switch, which (with
    /// PR_SET_KEEPCAPS) kept the permitted set but may have emptied the effective one.
    pub fn apply(&self) -> Result<()> {
        let set = |which: CapSet, value: &CapsHashSet| {
            caps::set(None, which, value)
                .map_err(|e| Error::Invalid(format!("setting {which:?} capabilities: {e}")))
        };
        // Raise effective to all we kept first: with CAP_SETPCAP in it the inheritable set
        // can be shaped freely. Then effective (it must stay within permitted), then
        // permitted (it must still cover effective), then ambient (within both).
        let kept = caps::read(None, CapSet::Permitted)
            .map_err(|e| Error::Invalid(format!("reading permitted capabilities: {e}")))?;
        set(CapSet::Effective, &kept)?;
        set(CapSet::Inheritable, &self.inheritable)?;
        set(CapSet::Effective, &self.effective)?;
        set(CapSet::Permitted, &self.permitted)?;
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| Error::Invalid(format!("clearing ambient capabilities: {e}")))?;
        // The kernel allows an ambient capability only when it is both permitted and
        // inheritable. runtime-spec says a capability that cannot be granted is not fatal, and
        // runc's default spec lists ambient ones without inheritable: skip those, as runc does.
        for cap in self.ambient.intersection(&self.inheritable) {
            if self.permitted.contains(cap) {
                caps::raise(None, CapSet::Ambient, *cap)
                    .map_err(|e| Error::Invalid(format!("raising ambient {cap}: {e}")))?;
            }
        }
        Ok(())
    }
}
