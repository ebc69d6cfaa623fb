//! Where Kubernetes objects come from: manifest files (`--manifests`) or,
//! later, the API server. Both hand the same snapshot type to
//! [`crate::config::ConfigApplier`], the one path to the routing model.

pub mod files;
pub mod manifests;
