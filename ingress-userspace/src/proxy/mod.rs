//! The L7 proxy: HTTP/1.1 and HTTP/2 from clients, routed by the routing
//! model to upstream endpoints.

pub mod balance;
pub mod headers;
