//! Ingresses as the annotation tests write them, and what they read in a
//! `curl -D -` head: one place for what every such test needs.

use ingress_model::fixtures::{ingress, manifest, prefix};

/// ingress-nginx's annotation prefix.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// Ingress `default/NAME` of our class for `host`, `/` to `service` port
/// 80, with `annotations` (names without a prefix go under ingress-nginx's;
/// ones with a `/` are taken as they are), as a manifest.
pub fn site_for(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut builder = ingress("default", name).ours();
    for (key, value) in annotations {
        let key = if key.contains('/') {
            (*key).to_owned()
        } else {
            format!("{NGINX}{key}")
        };
        builder = builder.annotation(&key, value);
    }
    manifest(&builder.rule(Some(host), vec![prefix("/", service)]).build())
}

/// [`site_for`] `NAME.example.com`, to Service `web`.
pub fn site(name: &str, annotations: &[(&str, &str)]) -> String {
    site_for(name, &format!("{name}.example.com"), "web", annotations)
}

/// Every value of the header `name` in a response head (`curl -D -`).
pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
        .collect()
}

/// The first value of the header `name` in a response head.
pub fn header_value(head: &str, name: &str) -> Option<String> {
    header_values(head, name).into_iter().next()
}

/// curl from `client` to the edge (`EDGE_ADDR`) for `path` with the `Host`
/// `host`, and the curl options `more`.
pub fn curl_host(
    client: &xdp_ingress_lab::Netns,
    host: &str,
    path: &str,
    more: &[&str],
) -> anyhow::Result<xdp_ingress_lab::CurlReply> {
    let host = format!("Host: {host}");
    let url = format!("http://{}{path}", xdp_ingress_lab::EDGE_ADDR);
    let mut args = vec!["-H", host.as_str()];
    args.extend_from_slice(more);
    args.push(&url);
    client.curl(&args)
}

/// The controller ConfigMap `ingress/xdp-ingress` with `data`, as a
/// manifest.
pub fn controller_config_map(data: &[(&str, &str)]) -> String {
    let data: Vec<String> = data
        .iter()
        .map(|(key, value)| format!("  {key}: {value:?}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: xdp-ingress, namespace: ingress}}\ndata:\n{}",
        data.join("\n")
    )
}
