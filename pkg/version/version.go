// Package version is the netns-cni release every binary reports: "dev"
// unless the build stamps it (make build does, from git describe):
//
//	go build -ldflags "-X github.com/netns-cni/netns-cni/pkg/version.Version=v0.2.0"
package version

// Version is the netns-cni release.
var Version = "dev"
