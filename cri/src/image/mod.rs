//! The image store. (in progress)
