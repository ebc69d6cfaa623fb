//! nginx under test: Debian's nginx with the configuration ingress-nginx
//! generates for the same Ingresses (its defaults: upstream keep-alive,
//! the forwarded headers, unbuffered proxying, a default server answering
//! 404), started in the edge namespace with its own prefix in a scratch
//! directory, never the system service.
//!
//! What ingress-nginx adds and this leaves out: the Lua it runs in the
//! rewrite, balancer and log phases of every request, its access log (off
//! here, as xdp-ingress has none), TLS and metrics. So this nginx is a
//! faster baseline than ingress-nginx itself.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Result, bail};
use xdp_ingress_lab::{Background, Netns, ScratchDir, poll_until, run_with_timeout};

use super::{measure, xdp};

/// How long nginx may take to parse its configuration and serve.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `nginx -t` and `nginx -s reload` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How upstreams are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamLayout {
    /// One `upstream` for every Service, with one keep-alive cache: what
    /// ingress-nginx renders (every location proxies to `upstream_balancer`,
    /// whose Lua balancer picks the endpoint), without the Lua.
    Shared,
    /// One `upstream` block per Service port, each with its own keep-alive
    /// cache: ingress-nginx's configuration before its Lua balancer. With
    /// 10,000 Services the caches exhaust `worker_connections` and nginx
    /// starts closing connections.
    PerService,
}

/// The name ingress-nginx gives the upstream of a Service port.
pub fn upstream_name(service: &str) -> String {
    format!("{}-{service}-80", xdp::NAMESPACE)
}

/// An `upstream` block with ingress-nginx's keep-alive defaults
/// (upstream-keepalive-connections 320, -requests 10000, -timeout 60 s).
fn upstream_block(name: &str, endpoints: &[SocketAddr]) -> String {
    let mut block = format!("  upstream {name} {{\n");
    for endpoint in endpoints {
        let _ = writeln!(block, "    server {endpoint} max_fails=0;");
    }
    block.push_str(
        "    keepalive 320;\n    keepalive_requests 10000;\n    keepalive_timeout 60s;\n  }\n",
    );
    block
}

/// The `server` block of one Ingress rule (`host`, path `/`), as
/// ingress-nginx renders it with its default annotations.
pub fn server_block(listen: SocketAddr, host: &str, upstream: &str) -> String {
    format!(
        "  server {{
    listen {listen};
    server_name {host};
    location / {{
      client_max_body_size 1m;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Request-ID $req_id;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Scheme $scheme;
      proxy_set_header Proxy \"\";
      proxy_connect_timeout 5s;
      proxy_send_timeout 60s;
      proxy_read_timeout 60s;
      proxy_buffering off;
      proxy_buffer_size 4k;
      proxy_buffers 4 4k;
      proxy_request_buffering on;
      proxy_http_version 1.1;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
      proxy_redirect off;
      proxy_pass http://{upstream};
    }}
  }}
"
    )
}

/// The whole `nginx.conf` for `count` Ingresses (`h<I>.bench.example` to
/// Service `svc-I`), listening on `listen`, its files under `prefix`, and
/// `conf.d/*.conf` included for the changes.
pub fn config(
    prefix: &Path,
    listen: SocketAddr,
    count: usize,
    endpoints: &[SocketAddr],
    layout: UpstreamLayout,
) -> String {
    let dir = prefix.display();
    let mut conf = format!(
        "\
# nginx as ingress-nginx configures it for {count} Ingress(es), one worker.
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;

events {{
  multi_accept on;
  worker_connections 16384;
  use epoll;
}}

http {{
  access_log off;
  server_tokens off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000;
  client_header_buffer_size 1k;
  large_client_header_buffers 4 8k;
  client_body_buffer_size 8k;
  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 64;
  variables_hash_max_size 2048;
  variables_hash_bucket_size 256;
  client_body_temp_path {dir}/tmp/client_body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;

  # ingress-nginx keeps a client's X-Request-ID, else makes one.
  map $http_x_request_id $req_id {{
    default $http_x_request_id;
    \"\" $request_id;
  }}
  # With upstream keep-alive, no Connection header upstream unless upgrading.
  map $http_upgrade $connection_upgrade {{
    default upgrade;
    \"\" \"\";
  }}

"
    );
    match layout {
        UpstreamLayout::PerService => {
            for index in 0..count {
                conf.push_str(&upstream_block(
                    &upstream_name(&xdp::service(index)),
                    endpoints,
                ));
            }
        }
        UpstreamLayout::Shared => conf.push_str(&upstream_block("upstream_balancer", endpoints)),
    }
    let _ = write!(
        conf,
        "
  # The default server: requests for no Ingress's host get 404.
  server {{
    listen {listen} default_server reuseport backlog=4096;
    server_name _;
    location / {{
      return 404;
    }}
  }}

"
    );
    for index in 0..count {
        let upstream = match layout {
            UpstreamLayout::PerService => upstream_name(&xdp::service(index)),
            UpstreamLayout::Shared => "upstream_balancer".to_owned(),
        };
        conf.push_str(&server_block(listen, &xdp::host(index), &upstream));
    }
    let _ = write!(conf, "\n  include {dir}/conf.d/*.conf;\n}}\n");
    conf
}

/// nginx running in the edge namespace (master and one worker) as a guard:
/// stopped (SIGTERM: fast shutdown) and its directory removed on drop.
#[derive(Debug)]
pub struct Nginx {
    process: Background,
    dir: ScratchDir,
    listen: SocketAddr,
    layout: UpstreamLayout,
}

impl Nginx {
    /// Writes `nginx.conf` for `count` Ingresses, checks it (`nginx -t`),
    /// starts `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` in `edge`
    /// on the CPUs `cpus`, and returns once it accepts connections on
    /// `listen` with a worker running.
    pub fn start(
        edge: &Netns,
        cpus: &str,
        listen: SocketAddr,
        count: usize,
        endpoints: &[SocketAddr],
        layout: UpstreamLayout,
    ) -> Result<Self> {
        Self::start_with_config(edge, cpus, listen, layout, |prefix| {
            config(prefix, listen, count, endpoints, layout)
        })
    }

    /// Like [`Nginx::start`], with the `nginx.conf` that `config` renders
    /// for the prefix directory it is given (which has `tmp/` and
    /// `conf.d/`); returns once it accepts connections on `listen`.
    pub fn start_with_config(
        edge: &Netns,
        cpus: &str,
        listen: SocketAddr,
        layout: UpstreamLayout,
        config: impl FnOnce(&Path) -> String,
    ) -> Result<Self> {
        let dir = ScratchDir::new("nginx")?;
        for sub in ["tmp", "conf.d"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        dir.write("nginx.conf", config(dir.path()))?;
        // In the namespace: the test binds the listening addresses.
        let mut test_args = vec!["nginx".to_owned()];
        test_args.extend(nginx_args(dir.path()));
        test_args.push("-t".to_owned());
        let test_args: Vec<&str> = test_args.iter().map(String::as_str).collect();
        let test = edge.exec_timeout(&test_args, COMMAND_TIMEOUT)?;
        if !test.status.success() {
            bail!(
                "nginx -t rejected the configuration:\n{}",
                String::from_utf8_lossy(&test.stderr)
            );
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", edge.name(), "taskset", "-c", cpus, "nginx"])
            .args(nginx_args(dir.path()))
            .args(["-g", "daemon off;"]);
        let process = Background::start(&mut command)?;
        let mut nginx = Self {
            process,
            dir,
            listen,
            layout,
        };
        poll_until("nginx to serve", START_TIMEOUT, || {
            if !nginx.process.running() {
                bail!("nginx exited:\n{}", nginx.error_log());
            }
            let worker = !measure::children(nginx.process.pid()).is_empty();
            Ok((worker && edge.accepts_tcp(listen)?).then_some(()))
        })?;
        Ok(nginx)
    }

    /// The master's pid (`ip netns exec` and `taskset` exec nginx).
    pub fn master_pid(&self) -> u32 {
        self.process.pid()
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.master_pid();
        std::iter::once(master)
            .chain(measure::children(master))
            .collect()
    }

    /// True while the master runs.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// What nginx logged.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The change: a server block for `host` to the upstream of Ingress 0,
    /// in `conf.d/NAME.conf`, then `nginx -s reload` (as ingress-nginx
    /// reloads after writing its configuration).
    pub fn add_ingress(&self, name: &str, host: &str) -> Result<()> {
        let upstream = match self.layout {
            UpstreamLayout::PerService => upstream_name(&xdp::service(0)),
            UpstreamLayout::Shared => "upstream_balancer".to_owned(),
        };
        self.dir.write(
            PathBuf::from("conf.d").join(format!("{name}.conf")),
            server_block(self.listen, host, &upstream),
        )?;
        let reload = run_with_timeout(
            Command::new("nginx")
                .args(nginx_args(self.dir.path()))
                .args(["-s", "reload"]),
            COMMAND_TIMEOUT,
        )?;
        if !reload.status.success() {
            bail!(
                "nginx -s reload failed:\n{}",
                String::from_utf8_lossy(&reload.stderr)
            );
        }
        Ok(())
    }
}

/// `-p DIR -c DIR/nginx.conf -e DIR/error.log`: everything in `dir`.
fn nginx_args(dir: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        format!("{}/", dir.display()),
        "-c".into(),
        dir.join("nginx.conf").display().to_string(),
        "-e".into(),
        dir.join("error.log").display().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_upstream_and_server_per_ingress() {
        let listen: SocketAddr = "198.18.0.1:80".parse().unwrap();
        let endpoints = super::super::lab::ENDPOINTS;
        let conf = config(
            Path::new("/x"),
            listen,
            3,
            &endpoints,
            UpstreamLayout::PerService,
        );
        assert_eq!(conf.matches("  upstream bench-svc-").count(), 3);
        assert_eq!(conf.matches("server_name h").count(), 3);
        assert!(conf.contains("proxy_pass http://bench-svc-2-80;"));
        assert!(conf.contains("keepalive 320;"));
        assert!(conf.contains("server 198.19.0.3:80 max_fails=0;"));
        assert!(conf.contains("default_server"));
        let shared = config(
            Path::new("/x"),
            listen,
            3,
            &endpoints,
            UpstreamLayout::Shared,
        );
        assert_eq!(shared.matches("  upstream ").count(), 1);
        assert_eq!(
            shared
                .matches("proxy_pass http://upstream_balancer;")
                .count(),
            3
        );
    }
}
