// Package agent is the node agent of a Kubernetes install (cmd/netns-cni-node,
// run by a DaemonSet): it copies the plugin binaries into the node's CNI bin
// directory, writes the node's conflist from its Node object's podCIDRs, and
// in host-gw mode keeps a route to every other node's pod CIDRs via that
// node's InternalIP of the CIDR's family. Its config (the ConfigMap) is
// read strictly and followed while it runs. Everything it writes is
// written atomically and only when it changes; it never removes what it
// did not make.
package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ConfName is the conflist's file name. Runtimes take the first conflist
// of their conf dir in lexical order, so it sorts ahead of those of the
// CNIs a cluster moves from (10-flannel.conflist, 10-kindnet.conflist,
// containerd's 10-containerd-net.conflist): a node that still has one
// uses ours.
const ConfName = "05-netns-cni.conflist"

// OldConfName is the conflist's name before v0.3.0, which sorted after
// 10-flannel.conflist and 10-containerd-net.conflist.
const OldConfName = "10-netns-cni.conflist"

// RemoveOldConflist removes the conflist at path if the agent wrote it: the
// network "netns-cni" with bridge-nat or veth-ptp as its first plugin. It
// leaves any other file there and says so in its error; a missing file is
// not an error.
func RemoveOldConflist(path string) (removed bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var list struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(data, &list) != nil || list.Name != "netns-cni" || len(list.Plugins) == 0 ||
		(list.Plugins[0].Type != "bridge-nat" && list.Plugins[0].Type != "veth-ptp") {
		return false, fmt.Errorf("%s is not a conflist the agent wrote; left in place", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// Conflist renders the node's network configuration from its podCIDRs.
func Conflist(cfg Config, node *corev1.Node) ([]byte, error) {
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return nil, fmt.Errorf("node %s has no podCIDRs yet", node.Name)
	}
	var ranges [][]map[string]string
	var routes []map[string]string
	for _, c := range cidrs {
		ranges = append(ranges, []map[string]string{{"subnet": c}})
		dst := "0.0.0.0/0"
		if strings.Contains(c, ":") {
			dst = "::/0"
		}
		routes = append(routes, map[string]string{"dst": dst})
	}
	// The pods' default route, per family, through the node: veth-ptp
	// installs exactly IPAM's routes (as the reference ptp does).
	ipam := map[string]any{"type": "host-local", "ranges": ranges, "routes": routes}
	if cfg.DataDir != "" {
		ipam["dataDir"] = cfg.DataDir
	}
	main := map[string]any{
		"ipMasq":             true,
		"nonMasqueradeCIDRs": cfg.ClusterCIDRs,
		"ipam":               ipam,
	}
	if cfg.MTU != 0 {
		main["mtu"] = cfg.MTU
	}
	main["type"] = cfg.plugin()
	if cfg.plugin() == "bridge-nat" {
		main["bridge"] = cfg.bridge()
		main["isDefaultGateway"] = true
		main["hairpinMode"] = true
	}
	// hostPort: the built-in port mappings, or the reference portmap.
	// Never both: each would forward the ports it is given.
	ports := map[string]bool{"portMappings": true}
	plugins := []any{main}
	if cfg.Portmap {
		plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": ports})
	} else {
		main["capabilities"] = ports
	}
	// cniVersion 1.0.0 unless the ConfigMap asks for 1.1.0: a runtime
	// then sends STATUS, and under Kubernetes a STATUS that fails (an
	// exhausted pool) makes the node NotReady — and, past the not-ready
	// toleration (300 s by default), evicts its pods. An operator's choice.
	list := map[string]any{"cniVersion": cfg.cniVersion(), "name": "netns-cni", "plugins": plugins}
	return json.MarshalIndent(list, "", "  ")
}

// WriteIfChanged writes data to path atomically (a temporary file renamed
// over it) unless the file already holds exactly data. It reports whether
// it wrote.
func WriteIfChanged(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := atomicWrite(path, bytes.NewReader(data), mode); err != nil {
		return false, err
	}
	return true, nil
}

func atomicWrite(path string, r io.Reader, mode os.FileMode) error {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// InstallBinaries copies each named file from src into dst, replacing a
// different one atomically, so that a runtime never execs a half-written
// plugin. It reports the names it (re)installed.
func InstallBinaries(src, dst string, names []string) ([]string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, err
	}
	var done []string
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			return done, fmt.Errorf("read %s: %w", n, err)
		}
		changed, err := WriteIfChanged(filepath.Join(dst, n), data, 0o755)
		if err != nil {
			return done, fmt.Errorf("install %s: %w", n, err)
		}
		if changed {
			done = append(done, n)
		}
	}
	return done, nil
}
