package ipam

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests below run the store from many processes at once, as runtimes
// run plugins: the test binary re-executes itself as a worker.

func TestMain(m *testing.M) {
	if mode := os.Getenv("IPAM_TEST_WORKER"); mode != "" {
		os.Exit(worker(mode))
	}
	os.Exit(m.Run())
}

// worker allocates and releases per its mode; it prints "ADD owner addr" for
// every address it holds at exit.
func worker(mode string) int {
	c, errs := Parse([]byte(os.Getenv("IPAM_TEST_CONF")), "")
	if len(errs) > 0 {
		fmt.Fprintln(os.Stderr, errs)
		return 2
	}
	c.LockTimeout = 30 * time.Second
	prefix := os.Getenv("IPAM_TEST_PREFIX")
	n, _ := strconv.Atoi(os.Getenv("IPAM_TEST_N"))
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch mode {
	case "hold": // allocate n owners and keep them
		for i := range n {
			o := Owner{fmt.Sprintf("%s-%d", prefix, i), "eth0"}
			ls, err := c.Allocate(o)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			for _, l := range ls {
				fmt.Fprintf(out, "ADD %s %s\n", o.ID, l.Address.Addr())
			}
		}
	case "release": // release n owners
		for i := range n {
			if err := c.Release(Owner{fmt.Sprintf("%s-%d", prefix, i), "eth0"}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	case "churn": // allocate and release in a loop until killed (or n rounds)
		if os.Getenv("IPAM_TEST_READY") != "" {
			fmt.Fprintln(os.Stderr, "ready") // the killer times its kill from here
		}
		for i := 0; n == 0 || i < n; i++ {
			o := Owner{fmt.Sprintf("%s-%d", prefix, i%4), "eth0"}
			if _, err := c.Allocate(o); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if i%3 != 0 {
				if err := c.Release(o); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
			}
		}
	}
	return 0
}

func startWorker(t *testing.T, conf, mode, prefix string, n int) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := newWorker(conf, mode, prefix, n)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start(t, cmd)
	return cmd, &out, &errb
}

// newWorker is the command that runs a worker.
func newWorker(conf, mode, prefix string, n int) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "IPAM_TEST_WORKER="+mode, "IPAM_TEST_CONF="+conf,
		"IPAM_TEST_PREFIX="+prefix, "IPAM_TEST_N="+strconv.Itoa(n))
	return cmd
}

// start starts a worker that is killed when the test ends, if still alive.
func start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// startReadyWorker starts a churn worker and returns once it is at work,
// so that a kill timed from now lands in its work, however slowly the
// binary starts (under the race detector, several times slower).
func startReadyWorker(t *testing.T, conf, prefix string) *exec.Cmd {
	t.Helper()
	cmd := newWorker(conf, "churn", prefix, 0)
	cmd.Env = append(cmd.Env, "IPAM_TEST_READY=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start(t, cmd)
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("worker did not start: %q %v", line, err)
	}
	return cmd
}

func confJSON(dataDir, ipam string) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net","ipam":{"type":"host-local","dataDir":%q,%s}}`, dataDir, ipam)
}

// storeFiles lists what the store directory holds besides its fixtures.
func storeFiles(t *testing.T, c *Config) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"", ".netns-cni/owners"} {
		ents, err := os.ReadDir(filepath.Join(c.Dir(), sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			n := e.Name()
			if n == "lock" || n == ".netns-cni" || strings.HasPrefix(n, "last_reserved_ip.") {
				continue
			}
			out = append(out, filepath.Join(sub, n))
		}
	}
	return out
}

func TestSixteenProcessesNeverShareAnAddress(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := confJSON(dataDir, `"ranges":[[{"subnet":"10.1.0.0/22"}],[{"subnet":"fd00::/118"}]]`)
	c, _ := Parse([]byte(cfg), "")
	const procs, each = 16, 25

	// Phase 1: 16 processes allocate at once and hold what they got.
	type run struct {
		cmd       *exec.Cmd
		out, errb *bytes.Buffer
	}
	var runs []run
	for p := range procs {
		cmd, out, errb := startWorker(t, cfg, "hold", fmt.Sprintf("p%d", p), each)
		runs = append(runs, run{cmd, out, errb})
	}
	owner := map[string]string{}
	for _, r := range runs {
		if err := r.cmd.Wait(); err != nil {
			t.Fatalf("worker: %v: %s", err, r.errb)
		}
		for _, line := range strings.Split(strings.TrimSpace(r.out.String()), "\n") {
			f := strings.Fields(line)
			if prev, dup := owner[f[2]]; dup {
				t.Fatalf("%s handed to both %s and %s", f[2], prev, f[1])
			}
			owner[f[2]] = f[1]
		}
	}
	if len(owner) != procs*each*2 {
		t.Fatalf("%d distinct addresses, want %d", len(owner), procs*each*2)
	}
	res := reservations(t, c)
	for addr, id := range owner {
		if res[addr] != id+"\r\neth0" {
			t.Fatalf("reservation %s = %q, want owner %s", addr, res[addr], id)
		}
	}

	// Phase 2: 16 processes release theirs while 16 others churn.
	var wg sync.WaitGroup
	for p := range procs {
		for _, mode := range []string{"release", "churn"} {
			prefix := fmt.Sprintf("p%d", p)
			n := each
			if mode == "churn" {
				prefix, n = fmt.Sprintf("churn%d", p), 30
			}
			cmd, _, errb := startWorker(t, cfg, mode, prefix, n)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := cmd.Wait(); err != nil {
					t.Errorf("%s worker: %v: %s", mode, err, errb)
				}
			}()
		}
	}
	wg.Wait()
	// Churn workers keep some owners; release them, then the store is empty.
	for p := range procs {
		for i := range 4 {
			if err := c.Release(Owner{fmt.Sprintf("churn%d-%d", p, i), "eth0"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if left := storeFiles(t, c); len(left) != 0 {
		t.Fatalf("store not empty at the end: %v", left)
	}
}

// TestKilledProcessesLeaveAConsistentStore SIGKILLs workers at random
// instants, round after round, then checks that every reservation belongs
// to an owner that can release it, cursors parse, and new ADDs work.
func TestKilledProcessesLeaveAConsistentStore(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := confJSON(dataDir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`)
	c, _ := Parse([]byte(cfg), "")
	rng := rand.New(rand.NewPCG(1, 2))
	const rounds, procs = 25, 6
	for round := range rounds {
		var cmds []*exec.Cmd
		for p := range procs {
			cmds = append(cmds, startReadyWorker(t, cfg, fmt.Sprintf("r%dp%d", round, p)))
		}
		for _, cmd := range cmds {
			time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	res := reservations(t, c)
	if len(res) == 0 {
		t.Fatal("no reservation survived: the workers never ran")
	}
	owners := map[Owner]bool{}
	for addr, body := range res {
		o := parseOwner(body)
		if o.ID == "" || o.IfName != "eth0" || !strings.HasPrefix(o.ID, "r") {
			t.Fatalf("reservation %s has a torn or foreign body %q", addr, body)
		}
		owners[o] = true
	}
	for i := range 2 {
		b, err := os.ReadFile(filepath.Join(c.Dir(), "last_reserved_ip."+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := netip.ParseAddr(string(b)); err != nil {
			t.Fatalf("cursor %d corrupt: %q", i, b)
		}
	}
	// Later ADDs are not blocked, and every owner can release what it holds.
	if _, err := c.Allocate(Owner{"after", "eth0"}); err != nil {
		t.Fatalf("ADD after the kills: %v", err)
	}
	owners[Owner{"after", "eth0"}] = true
	for o := range owners {
		if err := c.Release(o); err != nil {
			t.Fatal(err)
		}
	}
	if left := storeFiles(t, c); len(left) != 0 {
		t.Fatalf("reservations no owner could release: %v", left)
	}
	t.Logf("%d reservations from %d killed owners, all released by owner", len(res), len(owners)-1)
}
