// Command ptpbench measures veth-ptp against the reference ptp + host-local
// with ipMasq on, side by side in one run: N ADDs then N DELs through
// libcni, sequentially and P at a time, each implementation in a sandbox of
// its own (a fake host namespace and N pod namespaces). It prints p50/p95
// per operation and ops/s, and the ratios the project's targets are stated
// in. The machine's own network is never touched.
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

func main() {
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory of the netns-cni plugins")
	ref := flag.String("ref", "/usr/lib/cni", "directory of the reference plugins")
	n := flag.Int("n", 100, "attachments per run")
	par := flag.Int("parallel", 8, "concurrent operations in the parallel run")
	backend := flag.String("backend", "nftables", "ipMasqBackend for veth-ptp")
	flag.Parse()

	impls := []impl{
		{"netns-cni veth-ptp", *bin, fmt.Sprintf(`{"type":"veth-ptp","ipMasq":true,"ipMasqBackend":%q,"ipam":{"type":"host-local","dataDir":"DATADIR","subnet":"10.99.0.0/16"}}`, *backend)},
		{"reference ptp", *ref, `{"type":"ptp","ipMasq":true,"ipam":{"type":"host-local","dataDir":"DATADIR","subnet":"10.99.0.0/16"}}`},
	}
	results := map[string][2]stats{}
	for _, im := range impls {
		var s [2]stats
		for i, p := range []int{1, *par} {
			st, err := run(im, *n, p)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", im.name, err)
				os.Exit(1)
			}
			s[i] = st
		}
		results[im.name] = s
	}

	fmt.Printf("%d ADDs then %d DELs through libcni, ipv4, ipMasq on (veth-ptp backend: %s)\n\n", *n, *n, *backend)
	fmt.Printf("%-20s %-10s %10s %10s %10s %10s %12s\n", "plugin", "mode", "ADD p50", "ADD p95", "DEL p50", "DEL p95", "ops/s")
	for _, im := range impls {
		for i, mode := range []string{"sequential", fmt.Sprintf("%d at once", *par)} {
			s := results[im.name][i]
			fmt.Printf("%-20s %-10s %10s %10s %10s %10s %12.1f\n", im.name, mode,
				ms(pct(s.add, 50)), ms(pct(s.add, 95)), ms(pct(s.del, 50)), ms(pct(s.del, 95)),
				float64(2**n)/s.wall.Seconds())
		}
	}
	ours, theirs := results[impls[0].name], results[impls[1].name]
	fmt.Printf("\nratios (ours / reference): ADD p50 %.2f× (target ≤ 0.35), DEL p50 %.2f× (target ≤ 0.15); parallel throughput %.1f× the reference's (target ≥ 4)\n",
		float64(pct(ours[0].add, 50))/float64(pct(theirs[0].add, 50)),
		float64(pct(ours[0].del, 50))/float64(pct(theirs[0].del, 50)),
		theirs[1].wall.Seconds()/ours[1].wall.Seconds())
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
func run(im impl, n, par int) (st stats, err error) {
	dir, err := os.MkdirTemp("", "ptpbench-")
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
