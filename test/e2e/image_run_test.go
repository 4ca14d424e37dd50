package e2e

import (
	"os"
	"strings"
	"testing"
)

// TestNodeImageRunsUnderContainerd imports the DaemonSet's image (make
// image, built without a Docker engine) into containerd and runs it: the
// agent starts, and the plugins are where the DaemonSet copies them from.
func TestNodeImageRunsUnderContainerd(t *testing.T) {
	need(t, "containerd", "ctr", "runc", "unshare", "nsenter")
	img := os.Getenv("NETNS_CNI_IMAGE")
	if img == "" {
		t.Fatal("NETNS_CNI_IMAGE is not set: run through `make test`")
	}
	r := newRig(t)
	sock := r.startContainerd("")
	r.ctr(sock, "images", "import", "--snapshotter", "native", img)
	out := r.ctr(sock, "run", "--rm", "--snapshotter", "native", "docker.io/netns-cni/node:test", "img1", "/netns-cni-node", "-version")
	if !strings.Contains(out, "netns-cni-node") {
		t.Fatalf("the image's agent says %q", out)
	}
	// A plugin run by hand says what it is and exits 0, as the reference does.
	b, err := r.cmd("ctr", "-a", sock, "-n", "e2e", "run", "--rm", "--snapshotter", "native", "docker.io/netns-cni/node:test", "img2", "/opt/netns-cni/bin/veth-ptp").CombinedOutput()
	if err != nil || !strings.Contains(string(b), "CNI protocol versions supported") || strings.Contains(string(b), `"code"`) {
		t.Fatalf("the image's veth-ptp: %v, says %q", err, b)
	}
}
