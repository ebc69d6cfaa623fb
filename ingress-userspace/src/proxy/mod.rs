//! The L7 proxy: HTTP/1.1 and HTTP/2 from clients, routed by the routing
//! model to upstream endpoints over pooled HTTP/1.1 connections, or HTTP/2
//! and TLS as a route's `backend-protocol` asks.

pub mod access_log;
pub mod affinity;
pub mod auth;
pub mod balance;
pub mod body;
pub mod canary;
pub mod errors;
pub mod global;
pub mod headers;
pub mod http1;
pub mod limits;
pub mod mirror;
pub mod server;
pub mod upstream;
pub mod upstream_client;
pub mod upstream_tls;
