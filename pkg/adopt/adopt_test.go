package adopt

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/utils"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestNames: the reference's names, checked against its own helpers.
func TestNames(t *testing.T) {
	a := Attachment{Network: "mynet", ContainerID: "0123abcd", IfName: "eth0"}
	if got, want := a.Chain(), utils.FormatChainName("mynet", "0123abcd"); got != want || len(got) != 28 {
		t.Fatalf("chain %q, reference %q", got, want)
	}
	if got, want := a.comment(), utils.FormatComment("mynet", "0123abcd"); got != want {
		t.Fatalf("comment %q, reference %q", got, want)
	}
	want := utils.MustFormatHashWithPrefix(16, "", "mynet") + "-" + utils.MustFormatHashWithPrefix(16, "", "eth0:0123abcd")
	if got := a.nftPrefix(); got != want {
		t.Fatalf("nftables comment prefix %q, reference %q", got, want)
	}
}

// TestRemoveMasquerade plants the reference's masquerade state of two
// attachments, both backends, both families, in a sandbox host, and
// removes one attachment's: the other's and everything else stays.
func TestRemoveMasquerade(t *testing.T) {
	sb := nstest.NewT(t)
	gone := Attachment{Network: "net", ContainerID: "c1", IfName: "eth0"}
	kept := Attachment{Network: "net", ContainerID: "c2", IfName: "eth0"}
	run := func(args ...string) {
		t.Helper()
		if err := sb.Host.Do(func() error {
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			if err != nil {
				t.Errorf("%v: %v %s", args, err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range []Attachment{gone, kept} {
		for _, fam := range [][2]string{{"iptables", "10.1.0.%d"}, {"ip6tables", "fd01::%d"}} {
			src := strings.Replace(fam[1], "%d", string(rune('2'+i)), 1)
			run(fam[0], "-t", "nat", "-N", a.Chain())
			run(fam[0], "-t", "nat", "-A", a.Chain(), "-j", "MASQUERADE", "-m", "comment", "--comment", a.comment())
			run(fam[0], "-t", "nat", "-A", "POSTROUTING", "-s", src, "-j", a.Chain(), "-m", "comment", "--comment", a.comment())
		}
	}
	run("nft", "add table inet "+nftTable)
	run("nft", "add chain inet "+nftTable+" "+nftChain)
	for i, a := range []Attachment{gone, kept} {
		run("nft", "add rule inet "+nftTable+" "+nftChain+" ip saddr 10.1.0."+string(rune('2'+i))+` masquerade comment "`+a.nftPrefix()+`, net: net"`)
	}
	if err := sb.Host.Do(func() error { return RemoveMasquerade([]Attachment{gone}) }); err != nil {
		t.Fatal(err)
	}
	var state strings.Builder
	_ = sb.Host.Do(func() error {
		for _, c := range [][]string{{"iptables", "-t", "nat", "-S"}, {"ip6tables", "-t", "nat", "-S"}, {"nft", "list", "table", "inet", nftTable}} {
			out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
			state.Write(out)
		}
		return nil
	})
	s := state.String()
	if strings.Contains(s, gone.Chain()) || strings.Contains(s, gone.nftPrefix()) {
		t.Fatalf("c1's state left:\n%s", s)
	}
	if strings.Count(s, kept.Chain()) != 6 || !strings.Contains(s, kept.nftPrefix()) {
		t.Fatalf("c2's state touched:\n%s", s)
	}
	// Again: nothing there is no error. GC of the network keeping nobody.
	if err := sb.Host.Do(func() error { return RemoveMasquerade([]Attachment{gone}) }); err != nil {
		t.Fatal(err)
	}
	if err := sb.Host.Do(func() error { return CollectNFT("net", nil) }); err != nil {
		t.Fatal(err)
	}
	_ = sb.Host.Do(func() error {
		out, _ := exec.Command("nft", "list", "table", "inet", nftTable).CombinedOutput()
		if strings.Contains(string(out), kept.nftPrefix()) {
			t.Errorf("GC kept an unlisted attachment's rule:\n%s", out)
		}
		return nil
	})
}
