//! The lab's own end-to-end checks: `lab-backend` started as a [`Backend`]
//! inside a namespace answers on every address it was given, reports which
//! one, and is gone after its guard drops. Needs root; skips otherwise.

use std::net::SocketAddr;

use anyhow::Result;
use xdp_ingress_lab::{Backend, Netns, require_root};

#[test]
fn backend_reports_the_endpoint_that_served_and_stops_on_drop() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ns = Netns::new("be")?;
    ns.add_addrs("lo", &["198.18.1.1/32", "198.18.1.2/32"])?;
    let addrs: Vec<SocketAddr> = vec!["198.18.1.1:80".parse()?, "198.18.1.2:80".parse()?];
    let backend = Backend::start(&ns, "nginx-web", &addrs)?;
    for addr in &addrs {
        let reply = ns.http_get(
            &format!("http://{addr}/some/path?q=1"),
            &["Host: web.example"],
        )?;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let report = reply.report()?;
        assert_eq!(report.backend, "nginx-web");
        assert_eq!(report.endpoint, addr.to_string());
        assert_eq!(report.host, "web.example");
        assert_eq!(report.path, "/some/path?q=1");
    }
    let status = ns.http_get("http://198.18.1.1/status/503", &[])?;
    assert_eq!(status.status, 503);

    let pid = backend.pid();
    drop(backend);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "lab-backend {pid} still runs after its guard dropped"
    );
    assert!(ns.http_get("http://198.18.1.1/", &[]).is_err());
    Ok(())
}

#[test]
fn backend_on_a_missing_address_fails_with_the_reason() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ns = Netns::new("be")?;
    let error = Backend::start(&ns, "nowhere", &["198.18.9.9:80".parse()?])
        .expect_err("198.18.9.9 is not in the namespace");
    let message = format!("{error:#}");
    assert!(
        message.contains("exited early") && message.contains("198.18.9.9:80"),
        "{message}"
    );
    Ok(())
}
