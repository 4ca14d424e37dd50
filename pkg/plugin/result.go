package plugin

import (
	"io"

	"github.com/containernetworking/cni/pkg/types"
)

// PrintResult writes res to w converted to cniVersion. A result the version
// cannot express (0.1.0/0.2.0 without any address) is a version error that
// says which versions can.
func PrintResult(w io.Writer, res types.Result, cniVersion string) error {
	out, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return VersionError("cannot express the result as cniVersion %s: %v; use cniVersion 0.3.0 or later", cniVersion, err)
	}
	return out.PrintTo(w)
}

// IfaceIndex returns a pointer to i, for current.IPConfig.Interface.
func IfaceIndex(i int) *int { return &i }
