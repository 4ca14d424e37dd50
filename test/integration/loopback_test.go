package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

var allVersions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func atLeast(v, min string) bool {
	return slices.Index(allVersions, v) >= slices.Index(allVersions, min)
}

func loopbackList(w *world, version string) *libcni.NetworkConfigList {
	return w.confList(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[{"type":"loopback"}]}`,
		version, w.netName("lo"+strings.ReplaceAll(version, ".", ""))))
}

func TestLoopbackLifecycleEveryVersion(t *testing.T) {
	for _, v := range allVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			setLinkDown(t, w.sb.Host, "lo") // the sandbox's host has it up; down, a wrong-namespace ADD shows
			pod := w.sb.PodT(t, "pod")
			list := loopbackList(w, v)
			rt := w.rt("ctr-"+w.sb.ID, pod, "lo")

			if linkUp(t, pod, "lo") {
				t.Fatal("lo is up in a fresh namespace before ADD")
			}
			res, err := w.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if !linkUp(t, pod, "lo") {
				t.Fatal("lo is down after ADD")
			}
			if linkUp(t, w.sb.Host, "lo") {
				t.Fatal("ADD brought up lo in the host namespace it ran in")
			}
			if got := addrs(t, pod, "lo"); !slices.Contains(got, "127.0.0.1/8") {
				t.Fatalf("lo addresses after ADD: %v", got)
			}
			if len(res.IPs) == 0 || res.IPs[0].Address.String() != "127.0.0.1/8" {
				t.Fatalf("result IPs: %+v", res.IPs)
			}
			if atLeast(v, "0.3.0") {
				if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "lo" || res.Interfaces[0].Sandbox != pod.Path() {
					t.Fatalf("result interfaces: %+v", res.Interfaces)
				}
			}
			if atLeast(v, "0.4.0") {
				if err := w.check(list, rt); err != nil {
					t.Fatalf("CHECK after ADD: %v", err)
				}
			}
			if atLeast(v, "1.1.0") {
				if err := w.status(list); err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				if err := w.gc(list); err != nil {
					t.Fatalf("GC: %v", err)
				}
			}
			if err := w.del(list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if linkUp(t, pod, "lo") {
				t.Fatal("lo is still up after DEL")
			}
			if err := w.del(list, rt); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			if atLeast(v, "0.4.0") {
				// CHECK must notice what it verifies is gone. libcni needs a
				// cached result for CHECK, so ADD again and take lo down behind
				// the plugin's back.
				if _, err := w.add(list, rt); err != nil {
					t.Fatalf("re-ADD: %v", err)
				}
				setLinkDown(t, pod, "lo")
				if err := w.check(list, rt); err == nil {
					t.Fatal("CHECK passed with lo down")
				}
				if err := w.del(list, rt); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
		})
	}
}

func setLinkDown(t *testing.T, n *nsutil.NS, name string) {
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
	if err := h.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackDelWhenNamespaceIsGone(t *testing.T) {
	w := newWorld(t)
	list := loopbackList(w, "1.1.0")

	t.Run("empty CNI_NETNS", func(t *testing.T) {
		pod := w.sb.PodT(t, "empty")
		rt := w.rt("ctr-empty-"+w.sb.ID, pod, "lo")
		if _, err := w.add(list, rt); err != nil {
			t.Fatal(err)
		}
		rt.NetNS = ""
		if err := w.del(list, rt); err != nil {
			t.Fatalf("DEL with empty CNI_NETNS: %v", err)
		}
		if err := w.del(list, rt); err != nil {
			t.Fatalf("second DEL: %v", err)
		}
	})
	t.Run("vanished namespace", func(t *testing.T) {
		pod := w.sb.PodT(t, "gone")
		rt := w.rt("ctr-gone-"+w.sb.ID, pod, "lo")
		if _, err := w.add(list, rt); err != nil {
			t.Fatal(err)
		}
		if err := w.sb.RemovePod(pod); err != nil {
			t.Fatal(err)
		}
		if err := w.del(list, rt); err != nil {
			t.Fatalf("DEL after the namespace was removed: %v", err)
		}
		if err := w.del(list, rt); err != nil {
			t.Fatalf("second DEL: %v", err)
		}
	})
	t.Run("unmounted file left behind", func(t *testing.T) {
		pod := w.sb.PodT(t, "unmounted")
		rt := w.rt("ctr-unm-"+w.sb.ID, pod, "lo")
		if _, err := w.add(list, rt); err != nil {
			t.Fatal(err)
		}
		_ = pod.Close()
		if err := nsutil.Remove(pod.Path()); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pod.Path(), nil, 0o444); err != nil {
			t.Fatal(err)
		}
		if err := w.del(list, rt); err != nil {
			t.Fatalf("DEL with an unmounted namespace file: %v", err)
		}
	})
}

func TestLoopbackPassesPrevResultThrough(t *testing.T) {
	w := newWorld(t)
	pod := w.sb.PodT(t, "pod")
	// Two loopbacks: the second sees the first's result as prevResult and
	// must hand it on unchanged.
	list := w.confList(fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"loopback"},{"type":"loopback"}]}`, w.netName("chain")))
	rt := w.rt("ctr-"+w.sb.ID, pod, "lo")
	res, err := w.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 1 || len(res.IPs) == 0 || res.IPs[0].Address.String() != "127.0.0.1/8" {
		t.Fatalf("chained result: %s", res)
	}
	if err := w.check(list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestLoopbackBadInput feeds the binary each kind of bad input a runtime or
// a person could give it: each gets a non-zero exit, a CNI error with the
// right code naming the problem, and leaves the namespaces untouched.
func TestLoopbackBadInput(t *testing.T) {
	w := newWorld(t)
	setLinkDown(t, w.sb.Host, "lo") // the sandbox's host has it up; down, a wrong-namespace ADD shows
	pod := w.sb.PodT(t, "pod")
	regular := filepath.Join(w.sb.Dir, "regular-file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := `{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}`
	base := map[string]string{
		"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": pod.Path(),
		"CNI_IFNAME": "lo", "CNI_PATH": binDir,
	}
	envWith := func(kv ...string) []string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		var env []string
		for k, v := range m {
			env = append(env, k+"="+v)
		}
		return env
	}
	for _, tc := range []struct {
		name   string
		env    []string
		stdin  string
		code   uint
		msgHas string
	}{
		{"malformed json", envWith(), `{"cniVersion": "1.0.0", "name": `, 6, "decode network config"},
		{"missing CNI_CONTAINERID", envWith("CNI_CONTAINERID", ""), good, 4, "CNI_CONTAINERID"},
		{"missing CNI_NETNS", envWith("CNI_NETNS", ""), good, 4, "CNI_NETNS"},
		{"missing CNI_IFNAME", envWith("CNI_IFNAME", ""), good, 4, "CNI_IFNAME"},
		{"unknown command", envWith("CNI_COMMAND", "UPDATE"), good, 4, `"UPDATE"`},
		{"unsupported cniVersion", envWith(), `{"cniVersion":"2.0.0","name":"lo-net","type":"loopback"}`, 1, `"2.0.0"`},
		{"netns is a regular file", envWith("CNI_NETNS", regular), good, 4, "a regular file"},
		{"netns is a directory", envWith("CNI_NETNS", w.sb.Dir), good, 4, "a directory"},
		{"netns is missing", envWith("CNI_NETNS", filepath.Join(w.sb.Dir, "nope")), good, 4, "no such file"},
		{"netns is the plugin's own", envWith("CNI_NETNS", w.sb.Host.Path()), good, 4, "plugin's own"},
		{"ifname too long", envWith("CNI_IFNAME", "a-very-long-ifname"), good, 4, "CNI_IFNAME"},
		{"ifname with slash", envWith("CNI_IFNAME", "eth/0"), good, 4, "CNI_IFNAME"},
		{"network name with slash", envWith(), `{"cniVersion":"1.0.0","name":"a/b","type":"loopback"}`, 7, `"name"`},
		{"network name ..", envWith(), `{"cniVersion":"1.0.0","name":"..","type":"loopback"}`, 7, `"name"`},
		{"CHECK on 0.3.1", envWith("CNI_COMMAND", "CHECK"), `{"cniVersion":"0.3.1","name":"lo-net","type":"loopback"}`, 1, "CHECK needs"},
		{"bad logLevel", envWith(), `{"cniVersion":"1.0.0","name":"lo-net","type":"loopback","logLevel":"chatty"}`, 7, `"logLevel"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.exec("loopback", tc.env, tc.stdin)
			e := r.cniError(t)
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msgHas) {
				t.Fatalf("got code %d %q, want code %d mentioning %q", e.Code, e.Msg, tc.code, tc.msgHas)
			}
			if e.CNIVersion == "" {
				t.Fatalf("error without cniVersion: %s", r.stdout)
			}
			if linkUp(t, pod, "lo") || linkUp(t, w.sb.Host, "lo") {
				t.Fatal("bad input changed lo")
			}
			if got := linkNames(t, pod); len(got) != 1 {
				t.Fatalf("bad input left links in the pod: %v", got)
			}
		})
	}
}

func TestLoopbackVersion(t *testing.T) {
	w := newWorld(t)
	// Run by hand, without CNI_COMMAND: what it is, on stderr; exit 0.
	if r := w.exec("loopback", nil, ""); r.exit != 0 || r.stdout != "" || !strings.Contains(r.stderr, "CNI protocol versions supported: 0.1.0") {
		t.Fatalf("by hand: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		r := w.exec("loopback", []string{"CNI_COMMAND=VERSION"}, `{"cniVersion":"`+v+`"}`)
		if r.exit != 0 || !strings.Contains(r.stdout, `"cniVersion": "`+v+`"`) || !strings.Contains(r.stdout, `"0.1.0"`) {
			t.Fatalf("VERSION %s: exit %d, %s", v, r.exit, r.stdout)
		}
	}
}

// TestDelWithThePluginsOwnNamespace: a DEL whose CNI_NETNS is the
// namespace the plugin runs in — a /proc/<pid>/ns/net whose container is
// gone and whose pid a host process now has — succeeds and leaves that
// namespace alone, for loopback and for a retried DEL of veth-ptp.
func TestDelWithThePluginsOwnNamespace(t *testing.T) {
	w := newWorld(t)
	own := w.sb.Host.Path()
	for _, tc := range []struct{ plugin, conf string }{
		{"loopback", `{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}`},
		{"veth-ptp", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"own-ns","type":"veth-ptp","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.12.0.0/24","dataDir":%q}}`,
			filepath.Join(w.sb.Dir, "ipam"))},
	} {
		before := w.hostState(t)
		env := []string{"CNI_COMMAND=DEL", "CNI_CONTAINERID=gone", "CNI_NETNS=" + own, "CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
		if tc.plugin == "loopback" {
			env[3] = "CNI_IFNAME=lo"
		}
		if r := w.exec(tc.plugin, env, tc.conf); r.exit != 0 {
			t.Fatalf("%s DEL with the plugin's own namespace: exit %d %s", tc.plugin, r.exit, r.stdout)
		}
		if !linkUp(t, w.sb.Host, "lo") {
			t.Fatalf("%s DEL took the host's lo down", tc.plugin)
		}
		if after := w.hostState(t); after != before {
			t.Fatalf("%s DEL changed the host:\n%s", tc.plugin, stateDiff(before, after))
		}
	}
}
