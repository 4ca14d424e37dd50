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
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{{[]string{"-h"}, 0, ""}, {[]string{"--bogus"}, 2, ""}, {[]string{"x", "--version"}, 0, "tool dev\n"}} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		out.Reset()
		if _, code, done := Parse(fs, tc.args, &out, "tool"); !done || code != tc.code || out.String() != tc.out {
			t.Errorf("%v: code %d done %v out %q", tc.args, code, done, out.String())
		}
	}
}
