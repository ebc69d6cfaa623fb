//go:build tools

// The programs this module builds, kept in its dependencies.
package tools

import (
	_ "google.golang.org/grpc/interop/client"
	_ "google.golang.org/grpc/interop/server"
)
