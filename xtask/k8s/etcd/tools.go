//go:build tools

// Package tools records the etcd main package `cargo xtask setup --k8s` builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
