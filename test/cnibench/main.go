// Command cnibench measures netns-cni's plugins against the reference ones
// side by side in one run: veth-ptp against ptp + host-local, bridge-nat
// against bridge + host-local (isGateway), both with ipMasq on, and
// containerd's default conflist shape (bridge + portmap, dual-stack, two
// host ports per pod) against bridge-nat with its built-in port mappings.
// The references are Debian's 1.1.1 (/usr/lib/cni) and upstream v1.10.0
// built from the module go.mod pins (bin/upstream, when there). Each run
// is N ADDs then N DELs through libcni, sequentially and P at a time, in a
// sandbox of its own (a fake host namespace and N pod namespaces). It
// prints p50/p95 per operation, ops/s, the ratios the project's targets
// are stated in, STATUS and VERSION costs (VERSION is the floor: the
// client's start plus one plugin exec), the plugins' peak RSS, and, with
// -scale, how ADD and DEL hold up at 1,000 pods. The machine's own network
// is never touched.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sync/errgroup"

	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// impl is one plugin set under test: the conflist's plugins (DATADIR
// stands for the run's store), found in dir.
type impl struct {
	name, dir, plugins string
}

// suite is a comparison: ours first, then the references.
type suite struct {
	name, about string
	// version is the conflists' cniVersion (Debian's portmap speaks
	// 1.0.0 at most; containerd's default conflist says 1.0.0).
	version string
	impls   []impl
	runs    []run
	// ports: every pod asks for two host ports (TCP and UDP).
	ports  bool
	target string
}

type run struct {
	n, par int
}

type stats struct {
	add, del []time.Duration
	wall     time.Duration
}

var workDir string

func main() {
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory of the netns-cni plugins")
	ref := flag.String("ref", "/usr/lib/cni", "directory of Debian's reference plugins")
	upstream := flag.String("upstream", filepath.Join(filepath.Dir(self), "upstream"), "directory of the upstream v1.10.0 reference plugins (make bin/upstream/ptp ...); skipped when missing")
	n := flag.Int("n", 100, "attachments per run")
	par := flag.Int("parallel", 8, "concurrent operations in the parallel runs")
	big := flag.Int("big", 250, "attachments of the bridge's fuller-node run")
	backend := flag.String("backend", "nftables", "ipMasqBackend for ours")
	only := flag.String("suite", "", "veth-ptp, bridge-nat or containerd-shape; default all")
	scale := flag.Int("scale", 0, "also ADD this many pods to one network (ours), then DEL them, reporting p50 at pod 10, 100 and the last; 0: skip")
	probes := flag.Int("probes", 50, "STATUS and VERSION execs per plugin")
	lone := flag.Int("lone", 20, "times one pod is ADDed and DELed alone on its network (the network's first and last attachment: podman's one container per network); 0: skip")
	// The sandboxes hold each run's IPAM store and libcni cache. /var/tmp
	// sits on the same disk as /var/lib/cni, where these live on a node;
	// on the development VM /tmp creates files ~35× slower than the rest of
	// the same disk, which would measure the VM rather than the plugins.
	flag.StringVar(&workDir, "dir", "/var/tmp", "where the sandboxes keep their files")
	flag.Parse()
	// The plugins' locks on tmpfs, as /run is on a node, in a directory
	// of the run's own.
	unlock, err := nstest.PrivateLocks()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer unlock()
	closeOnSignal(unlock)

	refs := []struct{ name, dir string }{{"Debian 1.1.1", *ref}}
	if _, err := os.Stat(filepath.Join(*upstream, "ptp")); err == nil {
		refs = append(refs, struct{ name, dir string }{"upstream v1.10.0", *upstream})
	}
	ipam := `"ipam":{"type":"host-local","dataDir":"DATADIR","subnet":"10.99.0.0/16"}`
	dual := `"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[[{"subnet":"10.88.0.0/16"}],[{"subnet":"2001:db8:4860::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}`
	with := func(ours impl, ref func(dir string) string) []impl {
		out := []impl{ours}
		for _, r := range refs {
			out = append(out, impl{"reference " + r.name, r.dir, ref(r.dir)})
		}
		return out
	}
	bridgeRuns := []run{{*n, 1}, {*n, *par}}
	if *big > 0 {
		bridgeRuns = append(bridgeRuns, run{*big, *par})
	}
	suites := []suite{
		{name: "veth-ptp", about: "IPv4, ipMasq on", version: "1.0.0",
			impls: with(impl{"netns-cni veth-ptp", *bin, fmt.Sprintf(`{"type":"veth-ptp","ipMasq":true,"ipMasqBackend":%q,%s}`, *backend, ipam)},
				func(string) string { return `{"type":"ptp","ipMasq":true,` + ipam + `}` }),
			runs: []run{{*n, 1}, {*n, *par}}, target: "ADD p50 ≤ 0.30×, DEL p50 ≤ 0.15×, throughput 8 at once ≥ 5×"},
		{name: "bridge-nat", about: "IPv4, isGateway, ipMasq on", version: "1.0.0",
			impls: with(impl{"netns-cni bridge-nat", *bin, fmt.Sprintf(`{"type":"bridge-nat","bridge":"cni0","isGateway":true,"ipMasq":true,"ipMasqBackend":%q,%s}`, *backend, ipam)},
				func(string) string {
					return `{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,` + ipam + `}`
				}),
			runs: bridgeRuns, target: "ADD p50 ≤ 0.30×, DEL p50 ≤ 0.15×, throughput 8 at once ≥ 5×, ADD p95 ≤ 2× ADD p50 at the fuller node"},
		{name: "containerd-shape", about: "containerd's default conflist: bridge (promiscMode) + portmap, dual-stack, 2 host ports per pod", version: "1.0.0", ports: true,
			impls: with(impl{"netns-cni bridge-nat", *bin, fmt.Sprintf(`{"type":"bridge-nat","bridge":"cni0","isGateway":true,"ipMasq":true,"promiscMode":true,"ipMasqBackend":%q,"capabilities":{"portMappings":true},%s}`, *backend, dual)},
				func(string) string {
					return `{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"promiscMode":true,` + dual + `},{"type":"portmap","capabilities":{"portMappings":true}}`
				}),
			// Sequential only: Debian's portmap fails parallel ADDs on a
			// fresh node (its chains are created racily: "CHAIN_USER_ADD
			// failed (File exists)").
			runs: []run{{*n, 1}}, target: "ADD p50 ≤ 0.2×, DEL p50 ≤ 0.15×"},
	}
	for _, s := range suites {
		if *only != "" && *only != s.name {
			continue
		}
		if err := s.measure(*probes, *scale, *lone); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", s.name, err)
			unlock()
			os.Exit(1)
		}
	}
}

// measure runs the suite and prints its tables.
func (s suite) measure(probes, scale, lone int) error {
	results := map[string][]stats{}
	for _, im := range s.impls {
		for _, r := range s.runs {
			st, err := s.measureRun(im, r.n, r.par)
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			results[im.name] = append(results[im.name], st)
		}
	}
	fmt.Printf("%s: N ADDs then N DELs through libcni; %s\n", s.name, s.about)
	fmt.Printf("%-30s %-16s %10s %10s %10s %10s %10s\n", "plugin", "run", "ADD p50", "ADD p95", "DEL p50", "DEL p95", "ops/s")
	for _, im := range s.impls {
		for i, r := range s.runs {
			st := results[im.name][i]
			mode := fmt.Sprintf("N=%d sequential", r.n)
			if r.par > 1 {
				mode = fmt.Sprintf("N=%d, %d at once", r.n, r.par)
			}
			fmt.Printf("%-30s %-16s %10s %10s %10s %10s %10.1f\n", im.name, mode,
				ms(pct(st.add, 50)), ms(pct(st.add, 95)), ms(pct(st.del, 50)), ms(pct(st.del, 95)),
				float64(2*r.n)/st.wall.Seconds())
		}
	}
	ours := results[s.impls[0].name]
	for _, ref := range s.impls[1:] {
		theirs := results[ref.name]
		fmt.Printf("ours / %s: ADD p50 %.2f×, DEL p50 %.2f×", ref.name,
			ratio(pct(ours[0].add, 50), pct(theirs[0].add, 50)), ratio(pct(ours[0].del, 50), pct(theirs[0].del, 50)))
		if len(s.runs) > 1 {
			fmt.Printf("; throughput %d at once %.1f×", s.runs[1].par, theirs[1].wall.Seconds()/ours[1].wall.Seconds())
		}
		fmt.Println()
	}
	if len(s.runs) > 1 {
		fmt.Printf("ours, %d at once / sequential: %.2f× the throughput", s.runs[1].par, ours[0].wall.Seconds()/ours[1].wall.Seconds())
		if len(s.runs) > 2 {
			last := ours[len(ours)-1]
			fmt.Printf("; at N=%d: ADD p95/p50 %.2f", s.runs[2].n, ratio(pct(last.add, 95), pct(last.add, 50)))
		}
		fmt.Println()
	}
	fmt.Printf("(targets: %s)\n\n", s.target)
	var ourFloor floor
	for _, im := range s.impls {
		par := 1
		if len(s.runs) > 1 {
			par = s.runs[1].par
		}
		f, err := s.probe(im, probes, par, im.name == s.impls[0].name)
		if err != nil {
			return fmt.Errorf("%s: %w", im.name, err)
		}
		if im.name == s.impls[0].name {
			ourFloor = f
		}
	}
	bound := ourFloor.version + ourFloor.vethDel
	fmt.Printf("the least a DEL can cost here: VERSION p50 %s + a veth pair's delete p50 %s (kernel) = %s;", ms(ourFloor.version), ms(ourFloor.vethDel), ms(bound))
	for _, ref := range s.impls[1:] {
		fmt.Printf(" %.2f× %s's DEL p50;", ratio(bound, pct(results[ref.name][0].del, 50)), ref.name)
	}
	fmt.Println()
	fmt.Println()
	if lone > 0 {
		if err := s.loneRuns(lone); err != nil {
			return err
		}
	}
	if scale > 0 {
		for _, noV6 := range []bool{false, true} {
			if err := s.scaleRun(s.impls[0], scale, noV6); err != nil {
				return fmt.Errorf("%s: %w", s.impls[0].name, err)
			}
		}
	}
	return nil
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// sandbox is a run's fake host, its libcni and conflist.
type sandbox struct {
	sb   *nstest.Sandbox
	dir  string
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

func (s suite) newSandbox(im impl, version string) (*sandbox, error) {
	dir, err := os.MkdirTemp(workDir, "cnibench-")
	if err != nil {
		return nil, err
	}
	sb, err := nstest.New(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":"bench","plugins":[%s]}`, version,
		strings.ReplaceAll(im.plugins, "DATADIR", filepath.Join(dir, "ipam")))))
	if err != nil {
		_ = sb.Close()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	b := &sandbox{sb: sb, dir: dir, cni: libcni.NewCNIConfigWithCacheDir([]string{im.dir}, filepath.Join(dir, "cache"), nil), list: list}
	open.Lock()
	open.m[b] = true
	open.Unlock()
	return b, nil
}

func (b *sandbox) close() {
	open.Lock()
	delete(open.m, b)
	open.Unlock()
	_ = b.sb.Close()
	_ = os.RemoveAll(b.dir)
}

// open are the sandboxes not closed yet: an interrupted run closes them
// (their namespaces, links and files) before it exits.
var open = struct {
	sync.Mutex
	m map[*sandbox]bool
}{m: map[*sandbox]bool{}}

// closeOnSignal closes the open sandboxes on SIGINT or SIGTERM, runs
// cleanup and exits.
func closeOnSignal(cleanup func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-c
		open.Lock()
		for b := range open.m {
			_ = b.sb.Close()
			_ = os.RemoveAll(b.dir)
		}
		cleanup()
		fmt.Fprintf(os.Stderr, "cnibench: %v: sandboxes removed\n", sig)
		os.Exit(130)
	}()
}

// rt is pod i's runtime config: with two host ports when the suite maps
// ports (distinct per pod, as a node's hostPorts are).
func (s suite) rt(i int, netns string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("c%04d", i), NetNS: netns, IfName: "eth0"}
	if s.ports {
		rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
			{"hostPort": 20000 + 2*i, "containerPort": 80, "protocol": "tcp"},
			{"hostPort": 20001 + 2*i, "containerPort": 53, "protocol": "udp"},
		}}
	}
	return rt
}

// measureRun makes a fresh sandbox, then ADDs n pods and DELs them, par
// at a time.
func (s suite) measureRun(im impl, n, par int) (st stats, err error) {
	b, err := s.newSandbox(im, s.version)
	if err != nil {
		return st, err
	}
	defer b.close()
	pods := make([]*nsutil.NS, n)
	for i := range pods {
		if pods[i], err = b.sb.NewPod(fmt.Sprintf("p%04d", i)); err != nil {
			return st, err
		}
	}
	ctx := context.Background()
	var mu sync.Mutex
	do := func(op string, f func(i int) error) error {
		work := make(chan int)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range par {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					start := time.Now()
					err := b.sb.Host.Do(func() error { return f(i) })
					d := time.Since(start)
					if err != nil {
						errs <- fmt.Errorf("%s %d: %w", op, i, err)
						continue
					}
					mu.Lock()
					if op == "ADD" {
						st.add = append(st.add, d)
					} else {
						st.del = append(st.del, d)
					}
					mu.Unlock()
				}
			}()
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
		close(errs)
		return <-errs
	}
	start := time.Now()
	if err := do("ADD", func(i int) error { _, err := b.cni.AddNetworkList(ctx, b.list, s.rt(i, pods[i].Path())); return err }); err != nil {
		return st, err
	}
	if err := do("DEL", func(i int) error { return b.cni.DelNetworkList(ctx, b.list, s.rt(i, pods[i].Path())) }); err != nil {
		return st, err
	}
	st.wall = time.Since(start)
	return st, nil
}

// loneRuns ADDs one pod to a network that has none and DELs it, k times
// per implementation in one sandbox: each ADD is the network's first
// attachment (it makes the network's rules: masquerade, FORWARD accept,
// the bridge) and each DEL its last (it removes them) — what every
// `podman run` on a network of its own pays, and what the N-pod runs
// spread over N.
func (s suite) loneRuns(k int) error {
	results := map[string]stats{}
	for _, im := range s.impls {
		b, err := s.newSandbox(im, s.version)
		if err != nil {
			return err
		}
		pod, err := b.sb.NewPod("lone")
		if err != nil {
			b.close()
			return err
		}
		var st stats
		for range k {
			rt := s.rt(0, pod.Path())
			for _, op := range []string{"ADD", "DEL"} {
				start := time.Now()
				err := b.sb.Host.Do(func() error {
					if op == "ADD" {
						_, err := b.cni.AddNetworkList(context.Background(), b.list, rt)
						return err
					}
					return b.cni.DelNetworkList(context.Background(), b.list, rt)
				})
				if err != nil {
					b.close()
					return fmt.Errorf("%s: lone %s: %w", im.name, op, err)
				}
				if op == "ADD" {
					st.add = append(st.add, time.Since(start))
				} else {
					st.del = append(st.del, time.Since(start))
				}
			}
		}
		b.close()
		results[im.name] = st
	}
	fmt.Printf("%s, one pod alone on its network (its first and last attachment), %d times:\n", s.name, k)
	fmt.Printf("%-30s %10s %10s %10s %10s\n", "plugin", "ADD p50", "ADD p95", "DEL p50", "DEL p95")
	for _, im := range s.impls {
		st := results[im.name]
		fmt.Printf("%-30s %10s %10s %10s %10s\n", im.name, ms(pct(st.add, 50)), ms(pct(st.add, 95)), ms(pct(st.del, 50)), ms(pct(st.del, 95)))
	}
	ours := results[s.impls[0].name]
	for _, ref := range s.impls[1:] {
		theirs := results[ref.name]
		fmt.Printf("ours / %s: ADD p50 %.2f×, DEL p50 %.2f×\n", ref.name, ratio(pct(ours.add, 50), pct(theirs.add, 50)), ratio(pct(ours.del, 50), pct(theirs.del, 50)))
	}
	fmt.Println()
	return nil
}

// probe measures what a runtime's status polling costs — STATUS against
// VERSION, each exec'd through libcni; VERSION is the floor any verb pays
// — and the main plugin's peak RSS in an ADD. For ours it relates ADD to
// the floor, with ADDs interleaved with the VERSION and STATUS execs (this
// VM's speed drifts by a quarter within minutes, so a ratio of figures
// taken at different times says little), and measures what bounds the
// parallel runs (execScaling) and DEL (vethDelete) on this machine.
func (s suite) probe(im impl, n, par int, ours bool) (floor, error) {
	cniVersion := s.version
	if ours {
		cniVersion = "1.1.0" // STATUS is a 1.1.0 verb
	}
	b, err := s.newSandbox(im, cniVersion)
	if err != nil {
		return floor{}, err
	}
	defer b.close()
	ctx := context.Background()
	typ := b.list.Plugins[0].Network.Type
	var status, version, add []time.Duration
	var pods []*nsutil.NS
	for i := range n {
		if !ours {
			break
		}
		pod, err := b.sb.NewPod(fmt.Sprintf("f%04d", i))
		if err != nil {
			return floor{}, err
		}
		pods = append(pods, pod)
	}
	for i := range n {
		for _, m := range []struct {
			to *[]time.Duration
			f  func() error
		}{
			{&add, func() error {
				if !ours {
					return nil
				}
				_, err := b.cni.AddNetworkList(ctx, b.list, s.rt(i, pods[i].Path()))
				return err
			}},
			{&status, func() error {
				if !ours {
					return nil
				}
				return b.cni.GetStatusNetworkList(ctx, b.list)
			}},
			{&version, func() error { _, err := b.cni.GetVersionInfo(ctx, typ); return err }},
		} {
			start := time.Now()
			if err := b.sb.Host.Do(m.f); err != nil {
				return floor{}, err
			}
			*m.to = append(*m.to, time.Since(start))
		}
	}
	ve := pct(version, 50)
	f := floor{version: ve}
	fmt.Printf("%-30s VERSION p50 %s", im.name, ms(ve))
	if ours {
		rss, err := s.peakRSS(b, im, typ, cniVersion)
		if err != nil {
			return floor{}, err
		}
		fmt.Printf("; ADD p50 %s, %.2f× VERSION (interleaved); peak RSS of an ADD %s", ms(pct(add, 50)), ratio(pct(add, 50), ve), rss)
	}
	fmt.Println()
	if ours {
		st := pct(status, 50)
		fmt.Printf("%-30s STATUS p50 %s (%.2f× VERSION)\n", im.name, ms(st), ratio(st, ve))
		if par > 1 {
			x, err := execScaling(b, typ, 2*n, par)
			if err != nil {
				return floor{}, err
			}
			fmt.Printf("%-30s VERSION, %d at once / one at a time: %.2f× the throughput (what this machine lets any exec gain from running in parallel)\n", im.name, par, x)
		}
		if f.vethDel, err = vethDelete(b, n); err != nil {
			return floor{}, err
		}
	}
	return f, nil
}

// floor is what any plugin's verb costs on this machine before it does
// its own work: an exec answering VERSION, and for DEL the kernel's
// delete of a veth pair.
type floor struct{ version, vethDel time.Duration }

// vethDelete returns the p50 of n deletes of a veth pair between the
// sandbox's host and a pod namespace, both ends up, as an ADD leaves them:
// the kernel's part of every veth plugin's DEL (unregistering a network
// device waits for RCU grace periods), measured without any plugin.
func vethDelete(b *sandbox, n int) (time.Duration, error) {
	pod, err := b.sb.NewPod("vethdel")
	if err != nil {
		return 0, err
	}
	h, err := b.sb.Host.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	var ds []time.Duration
	for i := range n {
		name := fmt.Sprintf("vdel%d", i)
		if err := nstest.Wire(nstest.End{NS: b.sb.Host, Name: name}, nstest.End{NS: pod, Name: "eth0"}); err != nil {
			return 0, err
		}
		l, err := h.LinkByName(name)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if err := h.LinkDel(l); err != nil {
			return 0, fmt.Errorf("delete %s: %w", name, err)
		}
		ds = append(ds, time.Since(start))
	}
	return pct(ds, 50), nil
}

// execScaling runs n VERSION execs of typ one at a time, then n with par
// at once, and returns the second rate over the first: the floor's own
// gain from parallel runs, which bounds the plugins'. On a machine whose
// process start-up (exec, page faults, page-table work) does not spread
// over its cores, no plugin's 8 parallel ADDs can gain more.
func execScaling(b *sandbox, typ string, n, par int) (float64, error) {
	ctx := context.Background()
	rate := func(workers int) (time.Duration, error) {
		jobs := make(chan struct{}, n)
		for range n {
			jobs <- struct{}{}
		}
		close(jobs)
		var g errgroup.Group
		start := time.Now()
		for range workers {
			g.Go(func() error {
				for range jobs {
					if _, err := b.cni.GetVersionInfo(ctx, typ); err != nil {
						return err
					}
				}
				return nil
			})
		}
		err := g.Wait()
		return time.Since(start), err
	}
	one, err := rate(1)
	if err != nil {
		return 0, err
	}
	many, err := rate(par)
	if err != nil {
		return 0, err
	}
	return ratio(one, many), nil
}

// peakRSS runs one ADD of the main plugin by hand and returns its peak
// resident set size. Ours logs it at debug (VmHWM); getrusage's maxrss
// cannot tell, since a child Go starts with vfork inherits its parent's
// (this benchmark's) peak, so the references get no figure.
func (s suite) peakRSS(b *sandbox, im impl, typ, version string) (string, error) {
	pod, err := b.sb.NewPod("rss")
	if err != nil {
		return "", err
	}
	log := filepath.Join(b.dir, "rss.log")
	cmd := exec.Command(filepath.Join(im.dir, typ))
	cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=rss", "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + im.dir, "PATH=" + os.Getenv("PATH"),
		lock.DirEnv + "=" + os.Getenv(lock.DirEnv)}
	var conf map[string]any
	if err := json.Unmarshal(b.list.Plugins[0].Bytes, &conf); err != nil {
		return "", err
	}
	conf["name"], conf["cniVersion"], conf["logLevel"], conf["logFile"] = "bench", version, "debug", log
	stdin, _ := json.Marshal(conf)
	cmd.Stdin = strings.NewReader(string(stdin))
	if err := b.sb.Host.Do(func() error { return cmd.Run() }); err != nil {
		return "", fmt.Errorf("ADD for RSS: %w", err)
	}
	out, _ := os.ReadFile(log)
	for _, l := range strings.Split(string(out), "\n") {
		if _, v, ok := strings.Cut(l, "peakRSS="); ok {
			return v, nil
		}
	}
	return "n/a", nil
}

// scaleRun ADDs n pods to one network, one at a time, then DELs them
// newest first, and prints the p50 of the ten operations around pod 10,
// pod 100 and pod n: flat when nothing on the path grows with the pods.
// With noV6 the pods' IPv6 is off: the control run that tells the
// plugin's path from the kernel's multicast flooding (every pod's IPv6
// link-local traffic — DAD, MLD reports, router solicitations — goes to
// every port of a bridge).
func (s suite) scaleRun(im impl, n int, noV6 bool) error {
	b, err := s.newSandbox(im, s.version)
	if err != nil {
		return err
	}
	defer b.close()
	ctx := context.Background()
	add, del := make([]time.Duration, n), make([]time.Duration, n)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range n {
		pod, err := b.sb.NewPod(fmt.Sprintf("s%04d", i))
		if err != nil {
			return err
		}
		if noV6 {
			if err := pod.Do(func() error {
				for _, k := range []string{"all", "default"} {
					if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return err
			}
		}
		rts[i] = s.rt(i, pod.Path())
		start := time.Now()
		if err := b.sb.Host.Do(func() error { _, err := b.cni.AddNetworkList(ctx, b.list, rts[i]); return err }); err != nil {
			return fmt.Errorf("ADD %d: %w", i, err)
		}
		add[i] = time.Since(start)
	}
	for i := n - 1; i >= 0; i-- {
		start := time.Now()
		if err := b.sb.Host.Do(func() error { return b.cni.DelNetworkList(ctx, b.list, rts[i]) }); err != nil {
			return fmt.Errorf("DEL %d: %w", i, err)
		}
		del[i] = time.Since(start)
	}
	window := func(ds []time.Duration, at int) time.Duration {
		lo, hi := max(at-5, 0), min(at+5, len(ds))
		return pct(ds[lo:hi], 50)
	}
	what := "IPv6 on in the pods"
	if noV6 {
		what = "IPv6 off in the pods (control)"
	}
	fmt.Printf("%s, %s: %d pods on one network, one at a time; p50 of the ten operations around pod k\n", im.name, what, n)
	fmt.Printf("%-8s %10s %10s\n", "pod", "ADD p50", "DEL p50")
	for _, at := range []int{10, 100, n - 5} {
		if at < n {
			fmt.Printf("%-8d %10s %10s\n", at, ms(window(add, at)), ms(window(del, at)))
		}
	}
	fmt.Printf("ADD at pod %d / pod 10: %.2f×; DEL: %.2f×\n\n", n, ratio(window(add, n-5), window(add, 10)), ratio(window(del, n-5), window(del, 10)))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[(len(s)-1)*p/100]
}
