// Command cnibench measures netns-cni's plugins against the reference ones
// side by side in one run — veth-ptp against ptp + host-local, bridge-nat
// against bridge + host-local (isGateway), both with ipMasq on: N ADDs then
// N DELs through libcni, sequentially and P at a time (and, for the bridge,
// with a fuller node), each run in a sandbox of its own (a fake host
// namespace and N pod namespaces). It prints p50/p95 per operation, ops/s,
// and the ratios the project's targets are stated in. The machine's own
// network is never touched.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

type impl struct {
	name, dir, conf string
}

type stats struct {
	add, del []time.Duration
	wall     time.Duration
}

var workDir string

type run struct {
	n, par int
}

func main() {
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory of the netns-cni plugins")
	ref := flag.String("ref", "/usr/lib/cni", "directory of the reference plugins")
	n := flag.Int("n", 100, "attachments per run")
	par := flag.Int("parallel", 8, "concurrent operations in the parallel runs")
	big := flag.Int("big", 250, "attachments of the bridge's fuller-node run")
	backend := flag.String("backend", "nftables", "ipMasqBackend for ours")
	only := flag.String("plugin", "", "veth-ptp or bridge-nat; default both")
	scale := flag.Int("scale", 0, "also ADD this many pods to one network (ours), then DEL them, reporting p50 at pod 10, 100 and the last; 0: skip")
	probes := flag.Int("probes", 50, "STATUS and VERSION execs per plugin")
	// The sandboxes hold each run's IPAM store and libcni cache. /var/tmp
	// sits on the same disk as /var/lib/cni, where these live on a node;
	// on the development VM /tmp creates files ~35× slower than the rest of
	// the same disk, which would measure the VM rather than the plugins.
	flag.StringVar(&workDir, "dir", "/var/tmp", "where the sandboxes keep their files")
	flag.Parse()

	ipam := `"ipam":{"type":"host-local","dataDir":"DATADIR","subnet":"10.99.0.0/16"}`
	suites := []struct {
		name   string
		impls  []impl
		runs   []run
		target string
	}{
		{"veth-ptp", []impl{
			{"netns-cni veth-ptp", *bin, fmt.Sprintf(`{"type":"veth-ptp","ipMasq":true,"ipMasqBackend":%q,%s}`, *backend, ipam)},
			{"reference ptp", *ref, `{"type":"ptp","ipMasq":true,` + ipam + `}`},
		}, []run{{*n, 1}, {*n, *par}}, "ADD p50 ≤ 0.35×, DEL p50 ≤ 0.15×, parallel throughput ≥ 4×"},
		{"bridge-nat", []impl{
			{"netns-cni bridge-nat", *bin, fmt.Sprintf(`{"type":"bridge-nat","bridge":"cni0","isGateway":true,"ipMasq":true,"ipMasqBackend":%q,%s}`, *backend, ipam)},
			{"reference bridge", *ref, `{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,` + ipam + `}`},
		}, []run{{*n, 1}, {*n, *par}, {*big, *par}}, "ADD p50 ≤ 0.3×, DEL p50 ≤ 0.15×, parallel throughput ≥ 5×, ADD p95 ≤ 2× ADD p50 at the fuller node"},
	}
	for _, suite := range suites {
		if *only != "" && *only != suite.name {
			continue
		}
		results := map[string][]stats{}
		for _, im := range suite.impls {
			for _, r := range suite.runs {
				st, err := measure(im, r.n, r.par)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n", im.name, err)
					os.Exit(1)
				}
				results[im.name] = append(results[im.name], st)
			}
		}
		fmt.Printf("%s: N ADDs then N DELs through libcni, IPv4, ipMasq on (ours with %s)\n", suite.name, *backend)
		fmt.Printf("%-22s %-16s %10s %10s %10s %10s %10s\n", "plugin", "run", "ADD p50", "ADD p95", "DEL p50", "DEL p95", "ops/s")
		for _, im := range suite.impls {
			for i, r := range suite.runs {
				s := results[im.name][i]
				mode := fmt.Sprintf("N=%d sequential", r.n)
				if r.par > 1 {
					mode = fmt.Sprintf("N=%d, %d at once", r.n, r.par)
				}
				fmt.Printf("%-22s %-16s %10s %10s %10s %10s %10.1f\n", im.name, mode,
					ms(pct(s.add, 50)), ms(pct(s.add, 95)), ms(pct(s.del, 50)), ms(pct(s.del, 95)),
					float64(2*r.n)/s.wall.Seconds())
			}
		}
		ours, theirs := results[suite.impls[0].name], results[suite.impls[1].name]
		fmt.Printf("ours / reference: ADD p50 %.2f×, DEL p50 %.2f×; throughput %d at once %.1f×",
			float64(pct(ours[0].add, 50))/float64(pct(theirs[0].add, 50)),
			float64(pct(ours[0].del, 50))/float64(pct(theirs[0].del, 50)),
			*par, theirs[1].wall.Seconds()/ours[1].wall.Seconds())
		if len(suite.runs) > 2 {
			last := ours[len(ours)-1]
			fmt.Printf("; at N=%d ours: ADD p95/p50 %.2f, throughput %.1f× the reference's",
				suite.runs[2].n, float64(pct(last.add, 95))/float64(pct(last.add, 50)),
				theirs[2].wall.Seconds()/last.wall.Seconds())
		}
		fmt.Printf("\n(targets: %s)\n\n", suite.target)
		if err := probe(suite.impls[0], *probes); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", suite.impls[0].name, err)
			os.Exit(1)
		}
		if *scale > 0 {
			if err := scaleRun(suite.impls[0], *scale); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", suite.impls[0].name, err)
				os.Exit(1)
			}
		}
	}
}

// probe measures what a runtime's status polling costs: STATUS against
// VERSION, each exec'd through libcni, and the plugin's peak RSS in an ADD.
func probe(im impl, n int) error {
	dir, err := os.MkdirTemp(workDir, "cnibench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	sb, err := nstest.New(dir)
	if err != nil {
		return err
	}
	defer func() { _ = sb.Close() }()
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bench","plugins":[%s]}`,
		replace(im.conf, "DATADIR", filepath.Join(dir, "ipam")))))
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{im.dir}, filepath.Join(dir, "cache"), nil)
	ctx := context.Background()
	var status, version []time.Duration
	for range n {
		for _, m := range []struct {
			to *[]time.Duration
			f  func() error
		}{
			{&status, func() error { return cni.GetStatusNetworkList(ctx, list) }},
			{&version, func() error { _, err := cni.GetVersionInfo(ctx, list.Plugins[0].Network.Type); return err }},
		} {
			start := time.Now()
			if err := sb.Host.Do(m.f); err != nil {
				return err
			}
			*m.to = append(*m.to, time.Since(start))
		}
	}
	pod, err := sb.NewPod("rss")
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(im.dir, list.Plugins[0].Network.Type))
	cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=rss", "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + im.dir, "PATH=" + os.Getenv("PATH")}
	var conf map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &conf); err != nil {
		return err
	}
	conf["name"], conf["cniVersion"] = "bench", "1.1.0"
	stdin, _ := json.Marshal(conf)
	cmd.Stdin = strings.NewReader(string(stdin))
	if err := sb.Host.Do(func() error { return cmd.Run() }); err != nil {
		return fmt.Errorf("ADD for RSS: %w", err)
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	st, ve := pct(status, 50), pct(version, 50)
	fmt.Printf("%s: STATUS p50 %s, VERSION p50 %s (%.2f×), exec'd through libcni, %d each; peak RSS of an ADD %d KiB\n\n",
		im.name, ms(st), ms(ve), float64(st)/float64(ve), n, rss)
	return nil
}

// scaleRun ADDs n pods to one network, one at a time, then DELs them
// newest first, and prints the p50 of the ten operations around pod 10,
// pod 100 and pod n: flat when nothing on the path grows with the pods.
func scaleRun(im impl, n int) error {
	dir, err := os.MkdirTemp(workDir, "cnibench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	sb, err := nstest.New(dir)
	if err != nil {
		return err
	}
	defer func() { _ = sb.Close() }()
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","plugins":[%s]}`,
		replace(im.conf, "DATADIR", filepath.Join(dir, "ipam")))))
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{im.dir}, filepath.Join(dir, "cache"), nil)
	ctx := context.Background()
	add, del := make([]time.Duration, n), make([]time.Duration, n)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range n {
		pod, err := sb.NewPod(fmt.Sprintf("s%04d", i))
		if err != nil {
			return err
		}
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("s%04d", i), NetNS: pod.Path(), IfName: "eth0"}
		start := time.Now()
		if err := sb.Host.Do(func() error { _, err := cni.AddNetworkList(ctx, list, rts[i]); return err }); err != nil {
			return fmt.Errorf("ADD %d: %w", i, err)
		}
		add[i] = time.Since(start)
	}
	for i := n - 1; i >= 0; i-- {
		start := time.Now()
		if err := sb.Host.Do(func() error { return cni.DelNetworkList(ctx, list, rts[i]) }); err != nil {
			return fmt.Errorf("DEL %d: %w", i, err)
		}
		del[i] = time.Since(start)
	}
	window := func(ds []time.Duration, at int) time.Duration {
		lo, hi := max(at-5, 0), min(at+5, len(ds))
		return pct(ds[lo:hi], 50)
	}
	fmt.Printf("%s: %d pods on one network, one at a time; p50 of the ten operations around pod k\n", im.name, n)
	fmt.Printf("%-8s %10s %10s\n", "pod", "ADD p50", "DEL p50")
	for _, at := range []int{10, 100, n - 5} {
		if at < n {
			fmt.Printf("%-8d %10s %10s\n", at, ms(window(add, at)), ms(window(del, at)))
		}
	}
	fmt.Printf("ADD at pod %d / pod 10: %.2f×; DEL: %.2f×\n\n", n, float64(window(add, n-5))/float64(window(add, 10)), float64(window(del, n-5))/float64(window(del, 10)))
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

// run makes a fresh sandbox, then ADDs n pods and DELs them, par at a time.
func measure(im impl, n, par int) (st stats, err error) {
	dir, err := os.MkdirTemp(workDir, "cnibench-")
	if err != nil {
		return st, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	sb, err := nstest.New(dir)
	if err != nil {
		return st, err
	}
	defer func() { _ = sb.Close() }()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","plugins":[%s]}`,
		replace(im.conf, "DATADIR", filepath.Join(dir, "ipam")))
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return st, err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{im.dir}, filepath.Join(dir, "cache"), nil)
	pods := make([]*nsutil.NS, n)
	for i := range pods {
		if pods[i], err = sb.NewPod(fmt.Sprintf("p%03d", i)); err != nil {
			return st, err
		}
	}
	rt := func(i int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("c%03d", i), NetNS: pods[i].Path(), IfName: "eth0"}
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
					err := sb.Host.Do(func() error { return f(i) })
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
	if err := do("ADD", func(i int) error { _, err := cni.AddNetworkList(ctx, list, rt(i)); return err }); err != nil {
		return st, err
	}
	if err := do("DEL", func(i int) error { return cni.DelNetworkList(ctx, list, rt(i)) }); err != nil {
		return st, err
	}
	st.wall = time.Since(start)
	return st, nil
}

func replace(s, old, repl string) string { return strings.ReplaceAll(s, old, repl) }
