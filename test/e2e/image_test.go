package e2e

import (
	"os"
	"testing"

	"github.com/netns-cni/netns-cni/pkg/ociimage"
)

// imageName is the name the test image is imported under; pauseImage is
// the same busybox that sleeps, for CRI's pod sandboxes.
const (
	imageName  = "docker.io/library/netns-cni-busybox:test"
	pauseImage = "docker.io/library/netns-cni-pause:test"
)

// buildImage writes an OCI image archive holding /bin/busybox (Debian's
// busybox-static) and its applets: no registry is reachable, so the test
// makes its own image.
func buildImage(t *testing.T, path string) { buildImageAs(t, path, imageName, []string{"sh"}) }

// buildImageAs writes the image under name, running cmd by default.
func buildImageAs(t *testing.T, path, name string, cmd []string) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox: %v (`make deps` installs busybox-static)", err)
	}
	links := map[string]string{}
	for _, app := range []string{"sh", "ip", "ping", "sleep", "cat", "nc", "wget", "true", "ls", "echo", "httpd", "timeout", "hostname"} {
		links["bin/"+app] = "busybox"
	}
	im := ociimage.Image{
		Name: name, Dirs: []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/", "root/"},
		Files: map[string][]byte{"bin/busybox": bb}, Symlinks: links,
		Cmd: cmd, Env: []string{"PATH=/bin"},
	}
	if err := im.Write(path); err != nil {
		t.Fatal(err)
	}
}
