// Package integration runs the built plugin binaries the way runtimes do —
// through libcni, through test/cnitool and by plain exec with a hand-made
// environment — inside sandboxed namespaces, and checks the kernel state
// they leave. Binaries come from $NETNS_CNI_BIN (make sets it to bin/);
// without it they are built into a temporary directory first.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// binDir holds loopback, veth-ptp, bridge-nat and cnitool; faultDir the
// plugins built with the faultinject tag, for the fault-injection tests
// ($NETNS_CNI_FAULT_BIN, which make sets; else built into a temporary
// directory); upstreamDir the reference ptp, bridge, host-local and portmap at the
// version go.mod pins (v1.10.0), built from the module
// ($NETNS_CNI_UPSTREAM_BIN, likewise).
var binDir, faultDir, upstreamDir string

// refDir holds Debian's reference plugins, used as chain partners.
const refDir = "/usr/lib/cni"

func TestMain(m *testing.M) {
	binDir, faultDir, upstreamDir = os.Getenv("NETNS_CNI_BIN"), os.Getenv("NETNS_CNI_FAULT_BIN"), os.Getenv("NETNS_CNI_UPSTREAM_BIN")
	var tmp []string
	for _, b := range []struct {
		dir  *string
		args []string
	}{
		{&binDir, []string{"../../plugins/...", "../cnitool"}},
		{&faultDir, []string{"-tags", "faultinject", "../../plugins/..."}},
		{&upstreamDir, []string{"github.com/containernetworking/plugins/plugins/main/ptp",
			"github.com/containernetworking/plugins/plugins/main/bridge", "github.com/containernetworking/plugins/plugins/ipam/host-local",
			"github.com/containernetworking/plugins/plugins/meta/portmap"}},
	} {
		if *b.dir != "" || os.Geteuid() != 0 {
			continue
		}
		dir, err := os.MkdirTemp("", "netns-cni-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		tmp = append(tmp, dir)
		build := exec.Command("go", append([]string{"build", "-o", dir + "/"}, b.args...)...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build plugins:", err)
			os.Exit(1)
		}
		*b.dir = dir
	}
	unlock, err := nstest.PrivateLocks()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_, before := os.Stat(lock.DefaultDir)
	code := m.Run()
	unlock()
	// Every plugin the tests ran had the private directory: one that took
	// the host's (an environment built without it) made this one.
	if _, after := os.Stat(lock.DefaultDir); before != nil && after == nil {
		fmt.Fprintf(os.Stderr, "a plugin run by the tests used the host's lock directory %s (its environment lacked %s)\n", lock.DefaultDir, lock.DirEnv)
		code = 1
	}
	for _, dir := range tmp {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// world is one test's sandbox: a fake host namespace where the plugins run,
// and a private config directory and libcni cache.
type world struct {
	t        testing.TB
	sb       *nstest.Sandbox
	confDir  string
	cacheDir string
	cni      *libcni.CNIConfig
}

func newWorld(t testing.TB) *world {
	t.Helper()
	sb := nstest.NewT(t)
	w := &world{t: t, sb: sb, confDir: filepath.Join(sb.Dir, "net.d"), cacheDir: filepath.Join(sb.Dir, "cache")}
	for _, d := range []string{w.confDir, w.cacheDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	w.usePath(binDir, refDir)
	return w
}

// usePath sets the plugin search path, first match wins.
func (w *world) usePath(dirs ...string) {
	w.cni = libcni.NewCNIConfigWithCacheDir(dirs, w.cacheDir, nil)
}

// netName is a network name unique to this sandbox.
func (w *world) netName(base string) string { return base + "-" + w.sb.ID }

// confList parses a conflist and writes it to the config directory.
func (w *world) confList(text string) *libcni.NetworkConfigList {
	w.t.Helper()
	list, err := libcni.ConfListFromBytes([]byte(text))
	if err != nil {
		w.t.Fatalf("conflist: %v\n%s", err, text)
	}
	if err := os.WriteFile(filepath.Join(w.confDir, list.Name+".conflist"), []byte(text), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return list
}

// inHost runs fn in the fake host namespace, where exec'd plugins land too.
func (w *world) inHost(fn func() error) error { return w.sb.Host.Do(fn) }

func (w *world) rt(id string, pod *nsutil.NS, ifname string) *libcni.RuntimeConf {
	path := ""
	if pod != nil {
		path = pod.Path()
	}
	return &libcni.RuntimeConf{ContainerID: id, NetNS: path, IfName: ifname}
}

func (w *world) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := w.inHost(func() (err error) {
		res, err = w.cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (w *world) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return w.inHost(func() error { return w.cni.CheckNetworkList(context.Background(), list, rt) })
}

func (w *world) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return w.inHost(func() error { return w.cni.DelNetworkList(context.Background(), list, rt) })
}

func (w *world) gc(list *libcni.NetworkConfigList, valid ...types.GCAttachment) error {
	return w.inHost(func() error {
		return w.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
	})
}

func (w *world) status(list *libcni.NetworkConfigList) error {
	return w.inHost(func() error { return w.cni.GetStatusNetworkList(context.Background(), list) })
}

// execResult is what a plugin or cnitool run printed and how it exited.
type execResult struct {
	stdout, stderr string
	exit           int
}

// exec runs a binary from binDir in the host namespace with exactly env
// (and the test binary's lock directory, pkg/lock) and stdin: the way to
// feed a plugin input libcni would never produce.
func (w *world) exec(name string, env []string, stdin string, args ...string) execResult {
	w.t.Helper()
	return w.execIn(binDir, name, env, stdin, args...)
}

// execIn is exec of the binary in dir.
func (w *world) execIn(dir, name string, env []string, stdin string, args ...string) execResult {
	w.t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, name), args...)
	cmd.Env = append(slices.Clip(env), lock.DirEnv+"="+os.Getenv(lock.DirEnv))
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	var runErr error
	if err := w.inHost(func() error { runErr = cmd.Run(); return nil }); err != nil {
		w.t.Fatal(err)
	}
	r := execResult{stdout: out.String(), stderr: errb.String()}
	if runErr != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) {
			r.exit = ee.ExitCode()
		} else {
			w.t.Fatalf("run %s: %v", name, runErr)
		}
	}
	return r
}

// cniError decodes the error object a failed plugin printed on stdout.
type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

func (r execResult) cniError(t testing.TB) cniError {
	t.Helper()
	if r.exit == 0 {
		t.Fatalf("exit 0, want an error; stdout: %s", r.stdout)
	}
	var e cniError
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
		t.Fatalf("stdout is not a CNI error object (%v): %q; stderr: %s", err, r.stdout, r.stderr)
	}
	return e
}

// linkState reads a link's flags in a namespace.
func linkUp(t *testing.T, n *nsutil.NS, name string) bool {
	t.Helper()
	h, err := n.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, n.Path(), err)
	}
	return l.Attrs().Flags&1 != 0 // net.FlagUp
}

// linkNames lists the links in a namespace.
func linkNames(t *testing.T, n *nsutil.NS) []string {
	t.Helper()
	h, err := n.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// addrs lists the addresses on a link in a namespace, as CIDR strings.
func addrs(t *testing.T, n *nsutil.NS, name string) []string {
	t.Helper()
	h, err := n.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out
}
