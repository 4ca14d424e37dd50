package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidFlag(t *testing.T) {
	var a attachments
	for _, s := range []string{"c1/eth0", "c2/net1"} {
		if err := a.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	want := attachments{{ContainerID: "c1", IfName: "eth0"}, {ContainerID: "c2", IfName: "net1"}}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Fatal(diff)
	}
	for _, bad := range []string{"c1", "/eth0", "c1/"} {
		if err := a.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestRuntimeConf(t *testing.T) {
	o := options{ifname: "eth0", cniArgs: "IP=10.1.0.5;K8S_POD_NAME=p", capArgs: `{"portMappings":[{"hostPort":80}]}`}
	rt, err := o.runtimeConf("add", "/run/netns/x")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rt.ContainerID, "cnitool-") || rt.NetNS != "/run/netns/x" || rt.IfName != "eth0" {
		t.Fatalf("runtime conf %+v", rt)
	}
	if diff := cmp.Diff([][2]string{{"IP", "10.1.0.5"}, {"K8S_POD_NAME", "p"}}, rt.Args); diff != "" {
		t.Fatal(diff)
	}
	if _, ok := rt.CapabilityArgs["portMappings"]; !ok {
		t.Fatalf("cap args not parsed: %v", rt.CapabilityArgs)
	}
	// The same namespace always maps to the same container id.
	rt2, _ := o.runtimeConf("add", "/run/netns/x")
	if rt2.ContainerID != rt.ContainerID {
		t.Fatal("container id not stable")
	}

	for _, tc := range []struct {
		o          options
		cmd, netns string
		want       string
	}{
		{options{}, "add", "", "NETNS is required"},
		{options{}, "del", "", "needs --container-id"},
		{options{cniArgs: "novalue"}, "add", "/x", "not K=V"},
		{options{capArgs: "[1]"}, "add", "/x", "CAP_ARGS"},
	} {
		if _, err := tc.o.runtimeConf(tc.cmd, tc.netns); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("runtimeConf(%q, %q) = %v, want %q", tc.cmd, tc.netns, err, tc.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no command; want add") || out.Len() > 0 {
		t.Fatalf("no args: code %d, %q", code, errb.String())
	}
	errb.Reset()
	// A directory that does not exist is named as such, not as one
	// without the network.
	if code := run([]string{"--netconfpath", "/nonexistent-netns-cni", "status", "net"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "stat /nonexistent-netns-cni: no such file") {
		t.Fatalf("missing --netconfpath: code %d, %q", code, errb.String())
	}
	// A bad flag: why, and where the usage is; nothing on stdout.
	errb.Reset()
	if code := run([]string{"--bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "run 'cnitool help'") || out.Len() > 0 {
		t.Fatalf("bad flag: code %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	errb.Reset()
	if code := run([]string{"add", "net", "--valid", "bad"}, &out, &errb); code != 2 {
		t.Fatalf("bad --valid: code %d", code)
	}
	errb.Reset()
	code := run([]string{"--netconfpath", t.TempDir(), "add", "missing", "/x"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "missing") {
		t.Fatalf("missing network: code %d, %q", code, errb.String())
	}
}

// TestCommandLine: help on stdout and per command, --version, the
// command and its arguments checked before any config is read, gc asking
// for --valid or --all.
func TestCommandLine(t *testing.T) {
	empty := t.TempDir() // a config directory with no network: reading it would fail
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"help"}, 0, "Usage: cnitool", ""},
		{[]string{"--help"}, 0, "Commands:", ""},
		{[]string{"help", "add"}, 0, "Usage: cnitool [flags] add NETWORK NETNS\n\nattach the namespace", ""},
		{[]string{"help", "add"}, 0, "-container-id string", ""},
		{[]string{"help", "frob"}, 2, "", `unknown command "frob"`},
		{[]string{"--version"}, 0, "cnitool (netns-cni) dev", ""},
		{[]string{"frob", "net"}, 2, "", `unknown command "frob"`},
		{[]string{"add", "net"}, 2, "", "add takes NETWORK and NETNS"},
		{[]string{"add", "net", "/x", "extra"}, 2, "", "add takes NETWORK and NETNS"},
		{[]string{"status", "net", "/x"}, 2, "", "status takes NETWORK and nothing more"},
		{[]string{"del", "net", "/x", "y"}, 2, "", "del takes NETWORK and at most NETNS"},
		{[]string{"gc", "net"}, 2, "", "say --all"},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"--netconfpath", empty}, tc.args...), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.errOut) {
			t.Errorf("cnitool %v: code %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.errOut)
		}
	}
}

// TestBrokenConflistNamed: a file in the config directory that does not
// parse is named in the error.
func TestBrokenConflistNamed(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10-broken.conflist"), []byte(`{"cniVersion":"1.0.0","name":`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--netconfpath", dir, "status", "net"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "10-broken.conflist") {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
}

// TestNetworkNotFound: a network the directory lacks is named with those
// it has (a single plugin's .conf among them, each name once), whatever files beside them
// do not parse; a network in a file after a broken one is loaded.
func TestNetworkNotFound(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"10-good.conflist":   `{"cniVersion":"1.0.0","name":"good","plugins":[{"type":"loopback"}]}`,
		"20-broken.conflist": `{"cniVersion":"1.0.0","name":`,
		"30-after.conflist":  `{"cniVersion":"1.1.0","name":"after","plugins":[{"type":"nosuch"}]}`,
		"40-single.conf":     `{"cniVersion":"1.0.0","name":"single","type":"loopback"}`,
		"50-single-old.conf": `{"cniVersion":"1.0.0","name":"single","type":"loopback"}`, // named once in the list
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	code := run([]string{"--netconfpath", dir, "status", "nosuch"}, &out, &errb)
	for _, want := range []string{`no network named "nosuch"`, "(it has: good, after, single)", "20-broken.conflist"} {
		if code != 1 || !strings.Contains(errb.String(), want) {
			t.Fatalf("code %d, stderr %q; want %q", code, errb.String(), want)
		}
	}
	// "after" is found past the broken file: its plugin is then looked for.
	errb.Reset()
	code = run([]string{"--netconfpath", dir, "--cni-path", dir, "status", "after"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), `"nosuch"`) || strings.Contains(errb.String(), "no network named") {
		t.Fatalf("code %d, stderr %q; want the plugin nosuch not found", code, errb.String())
	}
}
