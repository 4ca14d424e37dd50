package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
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
	if r := w.exec("cnitool", env, "", "--help"); r.exit != 0 || !strings.Contains(r.stdout, "Usage: cnitool") {
		t.Fatalf("--help: exit %d, %q", r.exit, r.stdout)
	}
	if r := w.exec("cnitool", env, ""); r.exit == 0 {
		t.Fatal("no arguments: exit 0")
	}
}

// TestExamples runs every conflist in examples/ as shipped — only dataDir
// moved into the sandbox — through cnitool, with Debian's reference
// plugins on CNI_PATH as on a Debian 12 node: ADD, CHECK, DEL, and nothing
// left.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.conflist")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var list map[string]any
			if err := json.Unmarshal(b, &list); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			ifname := "eth0"
			for _, p := range list["plugins"].([]any) {
				p := p.(map[string]any)
				if ipam, ok := p["ipam"].(map[string]any); ok {
					ipam["dataDir"] = filepath.Join(w.sb.Dir, "ipam")
				}
				if p["type"] == "loopback" {
					ifname = "lo"
				}
			}
			out, _ := json.Marshal(list)
			if err := os.WriteFile(filepath.Join(w.confDir, filepath.Base(f)), out, 0o600); err != nil {
				t.Fatal(err)
			}
			name := list["name"].(string)
			pod := w.sb.PodT(t, "pod")
			env := []string{"NETCONFPATH=" + w.confDir, "CNI_PATH=" + binDir + ":" + refDir, "CNI_IFNAME=" + ifname,
				"CNI_CACHE_DIR=" + w.cacheDir, "CNI_CONTAINERID=example", "PATH=" + os.Getenv("PATH")}
			if strings.Contains(string(b), `"portMappings": true`) {
				// A host port, as a runtime asks for one.
				env = append(env, `CAP_ARGS={"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}`)
			}
			for _, cmd := range [][]string{{"add", name, pod.Path()}, {"check", name, pod.Path()}, {"status", name}, {"del", name, pod.Path()}} {
				if r := w.exec("cnitool", env, "", cmd...); r.exit != 0 {
					t.Fatalf("cnitool %v: %s %s", cmd, r.stdout, r.stderr)
				}
			}
			// The example's bridge stays, as the reference's does.
			if br, ok := list["plugins"].([]any)[0].(map[string]any)["bridge"].(string); ok {
				_ = w.inHost(func() error { return exec.Command("ip", "link", "del", br).Run() })
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestMakeInstallKeepsTheRuntimesLoopback: make install into a staging
// root that holds another loopback (containerd's CRI runs the one in
// /opt/cni/bin for every sandbox) keeps it aside, and make uninstall puts
// it back; uninstall removes an example configuration only while it is the
// one shipped.
func TestMakeInstallKeepsTheRuntimesLoopback(t *testing.T) {
	nstest.NeedFile(t, filepath.Join(refDir, "loopback"), "make deps")
	root, repo := t.TempDir(), filepath.Join("..", "..")
	bin, conf := filepath.Join(root, "opt", "cni", "bin"), filepath.Join(root, "etc", "cni", "net.d")
	theirs, err := os.ReadFile(filepath.Join(refDir, "loopback"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "loopback"), theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	make := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("make", append([]string{"-C", repo, "DESTDIR=" + root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	make("install")
	make("install") // twice: the kept loopback stays the runtime's
	make("install-config")
	if b, _ := os.ReadFile(filepath.Join(bin, "loopback.before-netns-cni")); !bytes.Equal(b, theirs) {
		t.Fatal("the runtime's loopback was not kept aside")
	}
	if b, _ := os.ReadFile(filepath.Join(bin, "loopback")); !bytes.Contains(b, []byte("github.com/netns-cni/netns-cni")) {
		t.Fatal("netns-cni's loopback not installed")
	}
	edited := filepath.Join(conf, "99-loopback.conflist")
	if err := os.WriteFile(edited, []byte(`{"edited":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := make("uninstall")
	if b, _ := os.ReadFile(filepath.Join(bin, "loopback")); !bytes.Equal(b, theirs) {
		t.Fatalf("uninstall did not restore the runtime's loopback:\n%s", out)
	}
	left, _ := filepath.Glob(filepath.Join(root, "*", "cni", "*", "*"))
	if want := []string{edited, filepath.Join(bin, "loopback")}; !slices.Equal(slices.Sorted(slices.Values(left)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("after uninstall: %v, want %v\n%s", left, want, out)
	}
}
