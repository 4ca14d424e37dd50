// Command mkimage assembles the DaemonSet's container image as an OCI image
// archive without a Docker engine: one layer holding the node agent as the
// entrypoint and the plugin binaries it installs, all static. Import it with
// `ctr images import` (containerd) or `podman load`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/netns-cni/netns-cni/pkg/ociimage"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the built binaries")
	out := flag.String("out", "bin/netns-cni-node-image.tar", "the OCI archive to write")
	name := flag.String("name", "docker.io/netns-cni/node:dev", "image name")
	flag.Parse()
	if err := build(*bin, *out, *name); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", *out, "as", *name)
}

func build(bin, out, name string) error {
	files := map[string]string{"netns-cni-node": "netns-cni-node"}
	for _, p := range []string{"loopback", "veth-ptp", "bridge-nat", "netns-cni"} {
		files["opt/netns-cni/bin/"+p] = p
	}
	im := ociimage.Image{
		Name: name, Dirs: []string{"opt/", "opt/netns-cni/", "opt/netns-cni/bin/", "etc/", "tmp/"},
		Files:      map[string][]byte{},
		Entrypoint: []string{"/netns-cni-node"}, Env: []string{"PATH=/opt/netns-cni/bin"},
	}
	for dst, src := range files {
		b, err := os.ReadFile(filepath.Join(bin, src))
		if err != nil {
			return fmt.Errorf("%w (run make build first)", err)
		}
		im.Files[dst] = b
	}
	return im.Write(out)
}
