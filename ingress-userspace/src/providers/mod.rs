//! Where Kubernetes objects come from: manifest files (`--manifests`) or,
//! later, the API server. Both produce the same snapshot for the routing model.

pub mod files;
