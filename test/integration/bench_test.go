package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// BenchmarkLoopbackAddDel measures one ADD plus one DEL of the loopback
// plugin through libcni, exec included, for ours and for the reference
// plugin from Debian's containernetworking-plugins, side by side.
func BenchmarkLoopbackAddDel(b *testing.B) {
	for _, impl := range []struct{ name, dir string }{{"netns-cni", binDir}, {"reference", refDir}} {
		b.Run(impl.name, func(b *testing.B) {
			if _, err := os.Stat(filepath.Join(impl.dir, "loopback")); err != nil {
				b.Fatalf("no loopback binary in %s (make deps installs the reference plugins): %v", impl.dir, err)
			}
			benchAddDel(b, impl.dir)
		})
	}
}

func benchAddDel(b *testing.B, dir string) {
	w := newWorld(b)
	w.usePath(dir)
	pod := w.sb.PodT(b, "pod")
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"loopback"}]}`, "bench-"+w.sb.ID)))
	if err != nil {
		b.Fatal(err)
	}
	rt := &libcni.RuntimeConf{ContainerID: "bench", NetNS: pod.Path(), IfName: "lo"}
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.add(list, rt); err != nil {
			b.Fatal(err)
		}
		if err := w.del(list, rt); err != nil {
			b.Fatal(err)
		}
	}
}
