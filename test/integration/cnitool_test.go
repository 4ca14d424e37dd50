package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestCnitool drives the loopback plugin through the cnitool binary, as a
// person would, with configuration from the environment and from flags.
func TestCnitool(t *testing.T) {
	w := newWorld(t)
	pod := w.sb.PodT(t, "pod")
	net := w.netName("tool")
	w.confList(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[{"type":"loopback"}]}`, net))
	env := []string{
		"NETCONFPATH=" + w.confDir, "CNI_PATH=" + binDir, "CNI_IFNAME=lo",
		"CNI_CACHE_DIR=" + w.cacheDir, "CNI_CONTAINERID=ctr1",
	}

	r := w.exec("cnitool", env, "", "add", net, pod.Path())
	if r.exit != 0 {
		t.Fatalf("add: exit %d: %s %s", r.exit, r.stdout, r.stderr)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.CNIVersion != "1.1.0" || len(res.IPs) == 0 {
		t.Fatalf("add printed %q (%v)", r.stdout, err)
	}
	if !linkUp(t, pod, "lo") {
		t.Fatal("lo down after cnitool add")
	}
	if r := w.exec("cnitool", env, "", "check", net, pod.Path()); r.exit != 0 {
		t.Fatalf("check: %s %s", r.stdout, r.stderr)
	}
	if r := w.exec("cnitool", env, "", "status", net); r.exit != 0 || !strings.Contains(r.stdout, "ready") {
		t.Fatalf("status: %s %s", r.stdout, r.stderr)
	}
	if r := w.exec("cnitool", env, "", "version", net); r.exit != 0 || !strings.Contains(r.stdout, "loopback: 0.1.0") {
		t.Fatalf("version: %s %s", r.stdout, r.stderr)
	}
	// Flags after the positional arguments, and a gc keeping the attachment.
	if r := w.exec("cnitool", env, "", "gc", net, "--valid", "ctr1/lo"); r.exit != 0 {
		t.Fatalf("gc: %s %s", r.stdout, r.stderr)
	}
	// del without a namespace, identified by container id alone.
	if r := w.exec("cnitool", env, "", "del", net); r.exit != 0 {
		t.Fatalf("del without netns: %s %s", r.stdout, r.stderr)
	}

	// Failure: a plugin error reaches the user as a non-zero exit with the
	// CNI error on stdout and a readable line on stderr.
	r = w.exec("cnitool", env, "", "add", net, w.sb.Dir)
	if r.exit == 0 || !strings.Contains(r.stderr, "not a network namespace") {
		t.Fatalf("add on a directory: exit %d, stderr %q", r.exit, r.stderr)
	}
	if e := r.cniError(t); e.Code != 4 {
		t.Fatalf("add on a directory: code %d, want 4", e.Code)
	}
	if r := w.exec("cnitool", env, "", "add", "no-such-net", pod.Path()); r.exit == 0 || !strings.Contains(r.stderr, "no-such-net") {
		t.Fatalf("unknown network: exit %d, stderr %q", r.exit, r.stderr)
	}
	if r := w.exec("cnitool", env, "", "frob", net); r.exit == 0 || !strings.Contains(r.stderr, "unknown command") {
		t.Fatalf("unknown command: exit %d, stderr %q", r.exit, r.stderr)
	}
	if r := w.exec("cnitool", env, "", "--help"); r.exit != 0 || !strings.Contains(r.stderr, "Usage: cnitool") {
		t.Fatalf("--help: exit %d, %q", r.exit, r.stderr)
	}
	if r := w.exec("cnitool", env, ""); r.exit == 0 {
		t.Fatal("no arguments: exit 0")
	}
}
