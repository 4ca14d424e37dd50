package main

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadConfigStopsBeforeAnythingIsWritten: a ConfigMap the agent refuses
// stops it with the key named, before a plugin is installed or a conflist
// written.
func TestBadConfigStopsBeforeAnythingIsWritten(t *testing.T) {
	t.Setenv("NODE_NAME", "n1")
	o := testOptions(t)
	for _, tc := range []struct{ conf, key string }{
		{`{"clusterCIDRs": ["10.244.0.0/16"], "hostGw": true}`, `"hostGw"`},
		{`{"clusterCIDRs": ["10.244.0.0/16"], "mtu": 100}`, `"mtu"`},
		{`{"clusterCIDRs": ["10.244.0.0/16"], "bridge": "br/0"}`, `"bridge"`},
		{`{"clusterCIDRs": ["10.244.0.0/160"]}`, `"clusterCIDRs[0]"`},
	} {
		if err := os.WriteFile(o.config, []byte(tc.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		err := run(slog.New(slog.NewTextHandler(io.Discard, nil)), o)
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), o.config) {
			t.Fatalf("%s: error %v, want one naming %s in %s", tc.conf, err, tc.key, o.config)
		}
		for _, d := range []string{o.binDir, o.confDir} {
			if ents, _ := os.ReadDir(d); len(ents) != 0 {
				t.Fatalf("%s: %s was written before the config was checked: %v", tc.conf, d, ents)
			}
		}
	}
}

// testOptions lays out a node's directories under a temporary directory,
// with the plugin binaries in the image's place, and the probes on a free
// port.
func testOptions(t *testing.T) options {
	t.Helper()
	dir := t.TempDir()
	o := options{
		config: filepath.Join(dir, "config.json"),
		srcBin: filepath.Join(dir, "src"), binDir: filepath.Join(dir, "bin"), confDir: filepath.Join(dir, "net.d"),
		health: "127.0.0.1:0",
	}
	for _, d := range []string{o.srcBin, o.binDir, o.confDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"loopback", "veth-ptp", "bridge-nat", "netns-cni"} {
		if err := os.WriteFile(filepath.Join(o.srcBin, p), []byte("#!/bin/true\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// TestProbeAddressTakenStopsTheAgent: a probe address that cannot be bound
// stops the agent with that as its error, before it installs anything; the
// kubelet would otherwise restart it for failed probes, the cause buried in
// its log.
func TestProbeAddressTakenStopsTheAgent(t *testing.T) {
	t.Setenv("NODE_NAME", "n1")
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // outside a cluster, whatever runs the test
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	o := testOptions(t)
	o.health = taken.Addr().String()
	if err := os.WriteFile(o.config, []byte(`{"clusterCIDRs": ["10.244.0.0/16"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err = run(slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	if err == nil || !strings.Contains(err.Error(), "probe") || !strings.Contains(err.Error(), o.health) {
		t.Fatalf("error %v, want one saying the probe address %s cannot be bound", err, o.health)
	}
	if ents, _ := os.ReadDir(o.binDir); len(ents) != 0 {
		t.Fatalf("plugins installed though the agent could not serve its probes: %v", ents)
	}
}
