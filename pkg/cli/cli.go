// Package cli holds what netns-cni's command-line tools (cnitool, the
// operator command) share.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/netns-cni/netns-cni/pkg/version"
)

// Parse adds a --version flag to fs and parses argv with it, letting flags
// come before, between or after the positional arguments, which it
// returns. When the tool is done — -h/--help (fs.Usage, exit 0), a bad flag
// (exit 2: flag's reason and a pointer to "name help" on fs's output, the
// usage kept for who asks for it), --version (printed to stdout as
// "name version", exit 0) — done is true and code is the exit status.
func Parse(fs *flag.FlagSet, argv []string, stdout io.Writer, name string) (pos []string, code int, done bool) {
	showVersion := fs.Bool("version", false, "print the version and exit")
	usage := fs.Usage
	fs.Usage = func() {} // flag calls it for a bad flag too
	defer func() { fs.Usage = usage }()
	for {
		if err := fs.Parse(argv); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage()
				return nil, 0, true
			}
			fmt.Fprintf(fs.Output(), "run '%s help' for the usage\n", fs.Name())
			return nil, 2, true
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		argv = fs.Args()[1:]
	}
	if *showVersion {
		fmt.Fprintln(stdout, name, version.Version)
		return nil, 0, true
	}
	return pos, 0, false
}
