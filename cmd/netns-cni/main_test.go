package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandLine: what is wrong with a command line is said on stderr
// in one line (exit 2); help, for any command, on stdout; all before the
// node is read.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{nil, 2, "", "no command; want list, audit"},
		{[]string{"help"}, 0, "Commands:", ""},
		{[]string{"help", "audit"}, 0, "Commands:", ""},
		{[]string{"--help"}, 0, "-conf-dir", ""},
		{[]string{"help", "frob"}, 2, "", `help: unknown command "frob"`},
		{[]string{"frob"}, 2, "", `unknown command "frob"`},
		{[]string{"list", "extra"}, 2, "", `list takes no arguments, got ["extra"]`},
		{[]string{"help", "list", "audit"}, 2, "", `help takes at most one command`},
		{[]string{"--bogus"}, 2, "", "run 'netns-cni help'"},
		{[]string{"--version"}, 0, "netns-cni dev", ""},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"--conf-dir", "/nonexistent"}, tc.args...), &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.errOut) ||
			tc.out == "" && out.Len() > 0 || strings.Count(errb.String(), "\n") > 2 {
			t.Errorf("netns-cni %v: code %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.errOut)
		}
	}
}

// TestDefaultCNIPath: repair finds the plugins beside netns-cni first
// (bin/netns-cni of a build used to miss bin/veth-ptp).
func TestDefaultCNIPath(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got := defaultCNIPath(); !strings.HasPrefix(got, filepath.Dir(exe)+":") || !strings.HasSuffix(got, ":/opt/cni/bin:/usr/lib/cni") {
		t.Fatalf("default --cni-path %q", got)
	}
}
