package cli

import (
	"bytes"
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := fs.Bool("v", false, "")
	n := fs.String("n", "", "")
	var out bytes.Buffer
	pos, code, done := Parse(fs, []string{"add", "-v", "net", "-n", "x", "/ns"}, &out, "tool")
	if done || code != 0 || !*v || *n != "x" || !slices.Equal(pos, []string{"add", "net", "/ns"}) {
		t.Fatalf("%v %d %v %v %q", pos, code, done, *v, *n)
	}
	// -h prints the usage where the tool's Usage puts it (stdout); a bad
	// flag says why and where the usage is, on the flag set's output
	// (stderr), and never prints the usage to stdout.
	for _, tc := range []struct {
		args      []string
		code      int
		out, diag string
	}{
		{[]string{"-h"}, 0, "USAGE", ""},
		{[]string{"--bogus"}, 2, "", "flag provided but not defined: -bogus\nrun 't help' for the usage\n"},
		{[]string{"x", "--version"}, 0, "tool dev\n", ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var diag bytes.Buffer
		fs.SetOutput(&diag)
		out.Reset()
		fs.Usage = func() { out.WriteString("USAGE") }
		if _, code, done := Parse(fs, tc.args, &out, "tool"); !done || code != tc.code || out.String() != tc.out || diag.String() != tc.diag {
			t.Errorf("%v: code %d done %v out %q diag %q", tc.args, code, done, out.String(), diag.String())
		}
	}
}
