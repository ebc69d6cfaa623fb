//! The routing model of xdp-ingress: a pure core, no I/O.
