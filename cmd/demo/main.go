// Command demo shows netns-cni at work without touching the machine's own
// network: it builds a sandbox (a fake host namespace, pod namespaces and an
// "outside" namespace standing in for the world, under a temporary
// directory), attaches the pods to each network of an embedded
// configuration through libcni exactly as a runtime would, proves what
// reaches what, tears everything down and shows that nothing leaked.
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

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// networks.json holds the conflists; DATADIR becomes the sandbox's IPAM
// directory.
//
//go:embed networks.json
var defaultNetworks []byte

func main() {
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory holding the netns-cni plugin binaries")
	pods := flag.Int("pods", 2, "pods to attach to each network")
	flag.Parse()
	// The plugins' locks in a directory of the demo's own: it leaves
	// nothing on the machine.
	unlock, err := nstest.PrivateLocks()
	if err == nil {
		err = run(os.Stdout, *bin, *pods)
		unlock()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	out     io.Writer
	sb      *nstest.Sandbox
	outside *nsutil.NS
	cni     *libcni.CNIConfig
	dir     string
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
	d := &demo{out: out, sb: sb, dir: dir}
	d.cni = libcni.NewCNIConfigWithCacheDir([]string{bin, "/usr/lib/cni"}, filepath.Join(dir, "cache"), nil)
	defer func() {
		if cerr := d.teardown(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if d.outside, err = sb.NewOutside(); err != nil {
		return err
	}

	d.say("netns-cni demo: sandbox in %s", dir)
	d.say("  fake host namespace %s, with an uplink to an \"outside\" namespace (%s, %s)", filepath.Base(sb.Host.Path()), nstest.Outside4, nstest.Outside6)
	d.say("  that has no route back to any pod: only masqueraded traffic gets an answer.")
	d.say("  The machine's own network is not touched.\n")

	var lists []json.RawMessage
	if err := json.Unmarshal(defaultNetworks, &lists); err != nil {
		return fmt.Errorf("embedded networks.json: %w", err)
	}
	for _, raw := range lists {
		text := strings.ReplaceAll(string(raw), "DATADIR", filepath.Join(dir, "ipam"))
		list, err := libcni.ConfListFromBytes([]byte(text))
		if err != nil {
			return fmt.Errorf("embedded network: %w", err)
		}
		if err := d.network(list, pods); err != nil {
			return fmt.Errorf("network %s: %w", list.Name, err)
		}
	}
	return nil
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }

type pod struct {
	name string
	ns   *nsutil.NS
	rt   *libcni.RuntimeConf
	res  *current.Result
}

// network attaches pods to one network, shows what they got and what they
// reach, checks and detaches them.
func (d *demo) network(list *libcni.NetworkConfigList, n int) error {
	var kinds []string
	for _, p := range list.Plugins {
		kinds = append(kinds, p.Network.Type)
	}
	d.say("network %q (cniVersion %s, plugins: %s)", list.Name, list.CNIVersion, strings.Join(kinds, " → "))
	ifname := "eth0"
	if kinds[0] == "loopback" {
		ifname = "lo"
	}
	ctx := context.Background()
	var pods []*pod
	for i := range n {
		name := fmt.Sprintf("%s-pod-%c", list.Name, 'a'+i)
		ns, err := d.sb.NewPod(name)
		if err != nil {
			return err
		}
		p := &pod{name: name, ns: ns, rt: &libcni.RuntimeConf{ContainerID: "demo-" + name, NetNS: ns.Path(), IfName: ifname}}
		var res types.Result
		start := time.Now()
		err = d.sb.Host.Do(func() (err error) {
			res, err = d.cni.AddNetworkList(ctx, list, p.rt)
			return err
		})
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("ADD %s: %w", name, err)
		}
		if p.res, err = current.NewResultFromResult(res); err != nil {
			return err
		}
		pods = append(pods, p)
		d.say("  %s  ADD ok in %v", name, took.Round(10*time.Microsecond))
		if err := d.showLinks(ns); err != nil {
			return err
		}
	}
	isolated := true
	for _, p := range pods {
		for _, t := range d.targets(p, pods) {
			isolated = isolated && (t.reach == strings.HasPrefix(t.label, "itself"))
			got := d.ping(p.ns, t.addr)
			switch {
			case t.reach:
				d.say("    %s → %-28s %s", p.name, t.label, got)
			case got == noAnswer:
				d.say("    %s → %-28s unreachable, as it should be", p.name, t.label)
			default:
				return fmt.Errorf("%s reaches %s, but its network has no way out: isolation broken", p.name, t.label)
			}
		}
	}
	if isolated {
		d.say("  isolation: each pod reaches itself and nothing else (lo is its only link)")
	}
	if rules := d.natRules(list.Name); rules != "" {
		d.say("  masquerade: %s", rules)
	}
	for _, p := range pods {
		if err := d.sb.Host.Do(func() error { return d.cni.CheckNetworkList(ctx, list, p.rt) }); err != nil {
			return fmt.Errorf("CHECK %s: %w", p.name, err)
		}
	}
	d.say("  CHECK ok for %d pod(s)", len(pods))
	for _, p := range pods {
		start := time.Now()
		if err := d.sb.Host.Do(func() error { return d.cni.DelNetworkList(ctx, list, p.rt) }); err != nil {
			return fmt.Errorf("DEL %s: %w", p.name, err)
		}
		d.say("  %s  DEL ok in %v", p.name, time.Since(start).Round(10*time.Microsecond))
	}
	d.say("")
	return nil
}

// target is an address a pod is tried against, and whether it should
// answer.
type target struct {
	label, addr string
	reach       bool
}

// targets lists what a pod should reach: itself, its gateways, the other
// pods, and the outside (through masquerade) when the network has an
// uplink. A pod whose network gives it only lo must reach itself and
// nothing else: the other pods and the outside are tried too, expecting
// no answer.
func (d *demo) targets(p *pod, all []*pod) []target {
	var out []target
	v4, v6 := false, false
	for _, ip := range p.res.IPs {
		if ip.Address.IP.IsLoopback() {
			out = append(out, target{"itself (" + ip.Address.IP.String() + ")", ip.Address.IP.String(), true})
			continue
		}
		if ip.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
		if ip.Gateway != nil {
			out = append(out, target{"gateway " + ip.Gateway.String(), ip.Gateway.String(), true})
		}
	}
	for _, o := range all {
		if o == p {
			continue
		}
		for _, ip := range o.res.IPs {
			if !ip.Address.IP.IsLoopback() {
				out = append(out, target{o.name + " " + ip.Address.IP.String(), ip.Address.IP.String(), true})
			}
		}
	}
	isolated := !v4 && !v6
	if v4 || isolated {
		out = append(out, target{"outside " + nstest.Outside4, nstest.Outside4, !isolated})
	}
	if v6 || isolated {
		out = append(out, target{"outside " + nstest.Outside6, nstest.Outside6, !isolated})
	}
	if isolated {
		out = append(out, target{"the host " + nstest.HostUplink4, nstest.HostUplink4, false})
	}
	return out
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
			if !a.IP.IsLinkLocalUnicast() {
				s = append(s, a.IPNet.String())
			}
		}
		d.say("         %-6s %-4s %s", l.Attrs().Name, state, strings.Join(s, " "))
	}
	return nil
}

const noAnswer = "NO ANSWER"

// ping sends one echo request from inside ns to addr, an address in a
// namespace the demo made.
func (d *demo) ping(ns *nsutil.NS, addr string) string {
	out, err := nstest.Ping(ns, addr)
	if err != nil {
		return noAnswer
	}
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "time="); i >= 0 {
			return "answers, " + line[i:]
		}
	}
	return "answers"
}

// natRules describes the masquerade rules of a network in the fake host.
func (d *demo) natRules(network string) string {
	var out []byte
	_ = d.sb.Host.Do(func() error {
		out, _ = exec.Command("nft", "list", "table", "inet", "netns-cni-"+network).Output()
		return nil
	})
	n := strings.Count(string(out), "masquerade")
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("nftables table inet netns-cni-%s holds %d rule(s): one per subnet, not one per pod", network, n)
}

// teardown proves nothing is left in the fake host — no veth, no NAT
// rule, no reservation, no cached attachment — then removes the sandbox.
func (d *demo) teardown() error {
	d.say("teardown:")
	var errs []error
	leftLinks := d.waitHostLinks()
	d.say("  host veths left: %d", leftLinks)
	var nft []byte
	_ = d.sb.Host.Do(func() error {
		nft, _ = exec.Command("nft", "list", "tables").Output()
		return nil
	})
	tables := strings.Count(string(nft), "netns-cni")
	d.say("  netns-cni NAT tables left: %d", tables)
	reservations := 0
	ents, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "*"))
	for _, e := range ents {
		if b := filepath.Base(e); b != "lock" && b != ".netns-cni" && !strings.HasPrefix(b, "last_reserved_ip.") {
			reservations++
		}
	}
	d.say("  IP reservations left: %d", reservations)
	cached := 0
	_ = filepath.WalkDir(filepath.Join(d.dir, "cache"), func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			cached++
		}
		return nil
	})
	d.say("  cached attachments left: %d", cached)
	if err := d.sb.Close(); err != nil {
		errs = append(errs, err)
	}
	left, _ := filepath.Glob(filepath.Join(d.dir, "*-"+d.sb.ID))
	d.say("  namespaces left: %d", len(left))
	if leftLinks+tables+reservations+cached+len(left) > 0 {
		errs = append(errs, errors.New("something leaked (see above)"))
	} else {
		d.say("  nothing leaked")
	}
	return errors.Join(errs...)
}

// waitHostLinks returns how many links of ours remain in the fake host,
// waiting briefly for the kernel to finish deleting.
func (d *demo) waitHostLinks() int {
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := 0
		if h, err := d.sb.Host.Handle(); err == nil {
			links, _ := h.LinkList()
			for _, l := range links {
				if _, ok := netconf.ParseAlias(l.Attrs().Alias); ok || l.Attrs().Alias == netconf.RetiredAlias {
					n++
				}
			}
			h.Close()
		}
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}
