// Command demo shows netns-cni at work without touching the machine's own
// network: it builds a sandbox (a fake host namespace and pod namespaces
// under a temporary directory), attaches the pods to each network of an
// embedded configuration through libcni exactly as a runtime would, proves
// what reaches what, tears everything down and shows that nothing leaked.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

//go:embed networks.json
var defaultNetworks []byte

func main() {
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory holding the netns-cni plugin binaries")
	pods := flag.Int("pods", 2, "pods to attach to each network")
	flag.Parse()
	if err := run(os.Stdout, *bin, *pods); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	out   io.Writer
	sb    *nstest.Sandbox
	cni   *libcni.CNIConfig
	cache string
}

func run(out io.Writer, bin string, pods int) (err error) {
	dir, err := os.MkdirTemp("", "netns-cni-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	sb, err := nstest.New(dir)
	if err != nil {
		return err
	}
	d := &demo{out: out, sb: sb, cache: filepath.Join(dir, "cache")}
	d.cni = libcni.NewCNIConfigWithCacheDir([]string{bin, "/usr/lib/cni"}, d.cache, nil)
	defer func() {
		if cerr := d.teardown(dir); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	fmt.Fprintf(out, "netns-cni demo: sandbox in %s\n", dir)
	fmt.Fprintf(out, "  fake host namespace %s; the machine's own network is not touched\n\n", filepath.Base(sb.Host.Path()))

	var lists []json.RawMessage
	if err := json.Unmarshal(defaultNetworks, &lists); err != nil {
		return fmt.Errorf("embedded networks.json: %w", err)
	}
	for _, raw := range lists {
		list, err := libcni.ConfListFromBytes(raw)
		if err != nil {
			return fmt.Errorf("embedded network: %w", err)
		}
		if err := d.network(list, pods); err != nil {
			return fmt.Errorf("network %s: %w", list.Name, err)
		}
	}
	return nil
}

// network attaches pods to one network, shows the result, checks, detaches.
func (d *demo) network(list *libcni.NetworkConfigList, n int) error {
	var kinds []string
	for _, p := range list.Plugins {
		kinds = append(kinds, p.Network.Type)
	}
	fmt.Fprintf(d.out, "network %q (cniVersion %s, plugins: %s)\n", list.Name, list.CNIVersion, strings.Join(kinds, " → "))
	ctx := context.Background()
	type attached struct {
		name string
		ns   *nsutil.NS
		rt   *libcni.RuntimeConf
	}
	var all []attached
	for i := range n {
		name := fmt.Sprintf("pod-%c", 'a'+i)
		ns, err := d.sb.NewPod(name)
		if err != nil {
			return err
		}
		rt := &libcni.RuntimeConf{ContainerID: "demo-" + name, NetNS: ns.Path(), IfName: "lo"}
		var res types.Result
		start := time.Now()
		err = d.sb.Host.Do(func() (err error) {
			res, err = d.cni.AddNetworkList(ctx, list, rt)
			return err
		})
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("ADD %s: %w", name, err)
		}
		all = append(all, attached{name, ns, rt})
		cur, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  %s  ADD ok in %v\n", name, took.Round(10*time.Microsecond))
		if err := d.showLinks(ns); err != nil {
			return err
		}
		var ips []string
		for _, ip := range cur.IPs {
			ips = append(ips, ip.Address.String())
		}
		fmt.Fprintf(d.out, "         result: %d interface(s), addresses %s\n", len(cur.Interfaces), strings.Join(ips, " "))
		fmt.Fprintf(d.out, "         ping 127.0.0.1 inside %s: %s\n", name, d.ping(ns, "127.0.0.1"))
	}
	for _, a := range all {
		if err := d.sb.Host.Do(func() error { return d.cni.CheckNetworkList(ctx, list, a.rt) }); err != nil {
			return fmt.Errorf("CHECK %s: %w", a.name, err)
		}
	}
	fmt.Fprintf(d.out, "  CHECK ok for %d pod(s)\n", len(all))
	for _, a := range all {
		if err := d.sb.Host.Do(func() error { return d.cni.DelNetworkList(ctx, list, a.rt) }); err != nil {
			return fmt.Errorf("DEL %s: %w", a.name, err)
		}
		up, _ := linkUp(a.ns, "lo")
		fmt.Fprintf(d.out, "  %s  DEL ok; lo up=%v\n", a.name, up)
	}
	fmt.Fprintln(d.out)
	return nil
}

func (d *demo) showLinks(ns *nsutil.NS) error {
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		state := "DOWN"
		if l.Attrs().Flags&1 != 0 {
			state = "UP"
		}
		as, _ := h.AddrList(l, netlink.FAMILY_ALL)
		var s []string
		for _, a := range as {
			s = append(s, a.IPNet.String())
		}
		fmt.Fprintf(d.out, "         %-6s %-4s %s\n", l.Attrs().Name, state, strings.Join(s, " "))
	}
	return nil
}

// ping sends one echo request from inside ns to addr, an address in a
// namespace the demo made.
func (d *demo) ping(ns *nsutil.NS, addr string) string {
	var out []byte
	var err error
	_ = ns.Do(func() error {
		out, err = exec.Command("ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		return nil
	})
	if err != nil {
		return "FAILED: " + strings.TrimSpace(string(out))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, "time="); i >= 0 {
			return "reply, " + line[i:]
		}
	}
	return "reply"
}

func linkUp(ns *nsutil.NS, name string) (bool, error) {
	h, err := ns.Handle()
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return false, err
	}
	return l.Attrs().Flags&1 != 0, nil
}

// teardown removes the sandbox and proves nothing is left: no namespace
// files, no cached attachments.
func (d *demo) teardown(dir string) error {
	fmt.Fprintln(d.out, "teardown:")
	if err := d.sb.Close(); err != nil {
		return err
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*-"+d.sb.ID))
	fmt.Fprintf(d.out, "  namespaces left: %d\n", len(left))
	cached := 0
	_ = filepath.WalkDir(d.cache, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			cached++
		}
		return nil
	})
	fmt.Fprintf(d.out, "  cached attachments left: %d\n", cached)
	if len(left) > 0 || cached > 0 {
		return fmt.Errorf("leaked %d namespaces, %d cache entries", len(left), cached)
	}
	fmt.Fprintln(d.out, "  nothing leaked")
	return nil
}
