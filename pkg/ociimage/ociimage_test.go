package ociimage

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img.tar")
	im := Image{Name: "example.org/x:1", Dirs: []string{"bin/"}, Files: map[string][]byte{"bin/tool": []byte("#!")},
		Symlinks: map[string]string{"bin/alias": "tool"}, Cmd: []string{"tool"}}
	if err := im.Write(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names[h.Name] = b
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(names["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != "example.org/x:1" ||
		index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "1" {
		t.Fatalf("index %s", names["index.json"])
	}
	if _, ok := names["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")]; !ok || names["oci-layout"] == nil {
		t.Fatalf("archive lacks the manifest blob or oci-layout: %v", len(names))
	}
}

func TestTagOf(t *testing.T) {
	for name, want := range map[string]string{"example.org/x:1": "1", "registry:5000/x": "latest", "x": "latest", "registry:5000/ns/x:v0.3.0": "v0.3.0"} {
		if got := tagOf(name); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", name, got, want)
		}
	}
}
