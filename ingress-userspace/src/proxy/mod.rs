//! The L7 proxy: HTTP/1.1 and HTTP/2 from clients, routed by the routing
//! model to upstream endpoints over pooled HTTP/1.1 connections.

pub mod auth;
pub mod balance;
pub mod body;
pub mod headers;
pub mod http1;
pub mod limits;
pub mod server;
pub mod upstream;
