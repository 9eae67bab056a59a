//! The per-container monitor. (in progress)
