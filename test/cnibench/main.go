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
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	}
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
