// Package ociimage writes a single-layer OCI image archive (an image layout
// in a tar), the kind `ctr images import` and `podman load` take, without a
// Docker engine: the node agent's image (cmd/mkimage) and the test images
// of the end-to-end tests are made with it.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"sort"
	"strings"
)

// Image describes the one layer and the config.
type Image struct {
	// Name is the reference the archive is imported under.
	Name string
	// Dirs are directories of the layer ("bin/").
	Dirs []string
	// Files map paths in the layer to their contents (mode 0755).
	Files map[string][]byte
	// Symlinks map paths in the layer to their targets.
	Symlinks map[string]string
	// Entrypoint, Cmd and Env go into the image config.
	Entrypoint, Cmd, Env []string
}

// Write writes the image archive to path.
func (im Image) Write(path string) error {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range im.Dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(im.Files) {
		b := im.Files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(b))}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(im.Symlinks) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: im.Symlinks[name], Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}

	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := put(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": im.Entrypoint, "Cmd": im.Cmd, "Env": im.Env},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest, cfgSize := put(cfg)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	mDigest, mSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mDigest, "size": mSize,
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": im.Name, "org.opencontainers.image.ref.name": tagOf(im.Name)},
		}},
	})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	out := tar.NewWriter(f)
	add := func(name string, b []byte) error {
		if err := out.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err := out.Write(b)
		return err
	}
	err = add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	if err == nil {
		err = add("index.json", index)
	}
	for _, d := range sortedKeys(blobs) {
		if err == nil {
			err = add("blobs/sha256/"+d[len("sha256:"):], blobs[d])
		}
	}
	if err == nil {
		err = out.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// tagOf is the tag of an image name ("registry/repo:tag"), "latest" when
// it names none: the layout's reference name for the image, as
// `skopeo copy oci-archive:FILE:TAG` selects it.
func tagOf(name string) string {
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return name[i+1:]
	}
	return "latest"
}
