//go:build tools

// Package tools records the kwok main package `cargo xtask setup --k8s` builds.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
